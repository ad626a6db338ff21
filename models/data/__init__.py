"""Training data: normalisation shared with the engine, aligned-raster chips, synthetic scenes, augmentation."""
