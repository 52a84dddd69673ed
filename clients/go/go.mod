module github.com/slct/slct/clients/go

go 1.19
