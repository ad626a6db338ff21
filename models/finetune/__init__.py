"""Fine-tune a model package on the analyst's own labels and write a new package (no qgis).

Inputs are file paths: the bound sources (``engine.bind_modalities``, exactly as ``segment``
binds them), labels as a raster or as polygons with a class field, optional area-of-interest
polygons. The modules, in the order they act:

* ``options``: what the analyst chooses (``FinetuneOptions``, whose defaults are the only ones,
  and the ``FREEZE`` vocabulary of (key, label) pairs the Processing enum is built from);
* ``labels``: label values or names mapped to the package's classes (unknown ones are an error
  that names them, unless mapped to a new class or to ``ignore``), and the validation strip:
  a spatially separate strip at the far end of the labelled area holding about ``val_fraction``
  of the labelled pixels;
* ``prepare``: every layer read through ``segment``'s grid, cropped to the labelled area and
  written as one aligned raster stack, so ``models.data`` (chips, augmentation, normalisation)
  is reused unchanged;
* ``network``: the package's network rebuilt with its weights (a head resized for new classes
  keeps the rows of the kept classes) and the chosen layers frozen;
* ``loop``: epochs of the network's own ``training_loss``, the validation mIoU after each, the
  best weights kept (early stopping, time budget and cancel end with them), exported with
  ``models.export.export_package``;
* ``metadata``: the new package's metadata (base model, layers, classes, validation scores).
"""
from ...engine.lazy_exports import lazy_exports

# Names resolve on first use (PEP 562): the Processing algorithm builds its parameters from
# ``options`` when the plugin loads, which must not pull in numpy, GDAL or torch.
_EXPORTS = {
    "labels": ("ClassResolver", "IGNORE_TARGET", "LabelInput", "NEW_PREFIX", "split_validation"),
    "loop": ("finetune",),
    "options": ("FINETUNE_DEFAULTS", "FREEZE", "FREEZE_CHOICES", "FinetuneOptions"),
    "results": ("EpochReport", "FinetuneResult"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), _EXPORTS)
