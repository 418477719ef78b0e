"""The work dir and the CamSDD tree: manifests, image store, embedding cache; local or gs://."""
