module example.com/fakevz

go 1.22
