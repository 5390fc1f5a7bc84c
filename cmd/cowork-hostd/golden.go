package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/coworkhq/cowork/hostd"
	"github.com/coworkhq/cowork/hostd/instance"
	"github.com/coworkhq/cowork/image/golden"
	"github.com/coworkhq/cowork/internal/buildinfo"
	"github.com/coworkhq/cowork/internal/hostdwire"
)

// goldenCmd runs `cowork-hostd golden OP`: the golden disks' store
// (image/golden), for `cowork init` and `cowork image`.
//
//	golden key --config JSON --image P [--kernel K] [--initrd I]
//	golden clone --key KEY --dir INSTANCE_DIR --size BYTES
//	golden capture --name NAME
//	golden ls
//	golden rm KEY_PREFIX...
//	golden prune
func goldenCmd(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{errors.New("golden: want key, clone, capture, ls, rm or prune")}
	}
	store, err := hostd.GoldenStore()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("golden "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	answer := func(v any) error { return json.NewEncoder(stdout).Encode(v) }
	switch op := args[0]; op {
	case "key":
		cfgJSON := fs.String("config", "", "the instance's config, as JSON")
		var src hostd.Sources
		fs.StringVar(&src.Image, "image", "", "the image")
		fs.StringVar(&src.Kernel, "kernel", "", "the kernel, for a kernel-boot instance")
		fs.StringVar(&src.Initrd, "initrd", "", "its initrd")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		var cfg instance.Config
		if err := json.Unmarshal([]byte(*cfgJSON), &cfg); err != nil || src.Image == "" {
			return usageError{errors.New("golden key: --config (JSON) and --image are required")}
		}
		spec, err := hostd.GoldenSpec(&cfg, src, hostd.GoldenDigests())
		if err != nil {
			return err
		}
		out := hostdwire.GoldenKey{Key: spec.Key()}
		g, err := store.Lookup(out.Key)
		if err != nil {
			return err
		}
		if g != nil {
			out.Found, out.Size = true, g.Size
		}
		return answer(out)
	case "clone":
		key := fs.String("key", "", "the golden disk")
		dir := fs.String("dir", "", "the new instance's folder")
		size := fs.Int64("size", 0, "the disk's size in bytes")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		if !golden.ValidKey(*key) || *dir == "" || *size <= 0 {
			return usageError{errors.New("golden clone: --key (64 hex digits), --dir and a positive --size are required")}
		}
		g, err := store.Lookup(*key)
		if err != nil {
			return err
		}
		if g == nil {
			return fmt.Errorf("no golden disk %s (removed meanwhile?); run init again", golden.Short(*key))
		}
		format, err := store.Clone(g, instance.Paths(*dir), *size)
		if err != nil {
			return err
		}
		return answer(hostdwire.GoldenResult{Key: g.Key, Format: format})
	case "capture":
		name := fs.String("name", "", "the instance")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		res, err := capture(store, *name)
		if err != nil {
			return err
		}
		return answer(res)
	case "ls":
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		all, err := store.List()
		if err != nil {
			return err
		}
		out := []hostdwire.GoldenDisk{}
		for _, g := range all {
			users, err := store.Dependants(g)
			if err != nil {
				return err
			}
			out = append(out, listed(g, users))
		}
		return answer(out)
	case "rm":
		if err := fs.Parse(args[1:]); err != nil || fs.NArg() == 0 {
			return usageError{errors.New("golden rm: name one or more golden disks by key")}
		}
		var errs []error
		for _, prefix := range fs.Args() {
			g, err := store.Find(prefix)
			if err == nil {
				err = store.Remove(g)
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if err := answer(listed(g, nil)); err != nil {
				return err
			}
		}
		return errors.Join(errs...)
	case "prune":
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		removed, err := store.Prune()
		for _, g := range removed {
			if err := answer(listed(g, nil)); err != nil {
				return err
			}
		}
		return err
	default:
		return usageError{fmt.Errorf("golden: no operation %q; want key, clone, capture, ls, rm or prune", op)}
	}
}

// capture makes the stopped instance's disk a golden disk: it takes the
// instance's lock, so no hostd starts it meanwhile.
func capture(store golden.Store, name string) (hostdwire.GoldenResult, error) {
	var res hostdwire.GoldenResult
	if err := instance.ValidateName(name); err != nil {
		return res, usageError{err}
	}
	cfg, err := instance.Load(name)
	if err != nil {
		return res, err
	}
	p, err := instance.PathsFor(name)
	if err != nil {
		return res, err
	}
	lock, err := instance.TryLock(p)
	if errors.Is(err, instance.ErrRunning) {
		return res, fmt.Errorf("instance %s is running; stop it first with `cowork stop%s`", name, instance.NameFlag(name))
	}
	if err != nil {
		return res, err
	}
	defer lock.Release()
	if _, err := store.Recover(p, cfg); err != nil {
		return res, err
	}
	spec, err := hostd.GoldenSpec(cfg, hostd.InstanceSources(cfg, p), hostd.GoldenDigests())
	if err != nil {
		return res, err
	}
	key := spec.Key()
	before := cfg.Golden
	g, err := store.Capture(p, cfg, golden.Meta{
		Key: key, Spec: spec, Image: cfg.Image, Provision: hostd.ProvisionSummary(cfg),
		Created: time.Now().UTC(), From: name, Version: buildinfo.Version,
	})
	if err != nil {
		return res, err
	}
	// A capture that found the key published left cfg as it was.
	return hostdwire.GoldenResult{Key: g.Key, Format: cfg.Format(), Existed: cfg.Golden == before}, nil
}

// listed is g as the listing shows it.
func listed(g *golden.Golden, users []string) hostdwire.GoldenDisk {
	d := hostdwire.GoldenDisk{
		Key: g.Key, Arch: g.Spec.Arch, Image: filepath.Base(g.Image), Provision: g.Provision,
		Size: g.Size, Allocated: g.Allocated, Created: g.Created.Format(time.RFC3339), From: g.From, Users: users,
	}
	if d.Users == nil {
		d.Users = []string{}
	}
	return d
}
