"""Files: images in, index files (code file, catalogue, descriptors, manifest) in and out."""
