"""The sidecar agent: follows a pointer, verifies, swaps the local link (see PRODUCT.md s3)."""
