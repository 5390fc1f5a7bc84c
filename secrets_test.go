package cowork

import (
	"context"
	"testing"

	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/hostd/instance/instancetest"
	"github.com/coworkhq/cowork/hostd/netstack/policy"
)

// Two handles on one instance (two commands at once): a policy saved
// through the one opened first keeps the secret set through the other.
func TestSecretSurvivesAnotherWriterOfTheConfig(t *testing.T) {
	t.Setenv("COWORK_SECRET_STORE", "file")
	instancetest.New(t, instance.Config{})
	a, err := Open(instance.DefaultName)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Open(instance.DefaultName)
	ctx := context.Background()
	if _, err := b.SetSecret(ctx, SecretSpec{Name: "GH", Host: "github.com"}, "value-long-enough"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SetPolicy(ctx, policy.Policy{Mode: policy.ModeAllowlist, Allow: []string{"github.com"}}); err != nil {
		t.Fatal(err)
	}
	c, _ := instance.Load(instance.DefaultName)
	if len(c.Secrets) != 1 || c.Network.Mode != policy.ModeAllowlist {
		t.Fatalf("config: secrets %+v, policy %+v", c.Secrets, c.Network.Policy)
	}
}
