//go:build tools

// Pins Helm for the chart's tests (helm lint, helm template); built by
// scripts/build-helm into a cache folder outside git.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
