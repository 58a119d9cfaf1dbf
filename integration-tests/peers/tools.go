//go:build tools

// Package tools records the peer commands this module builds, so that
// `go mod tidy` keeps their dependencies pinned in go.sum.
package tools

import (
	_ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
)
