"""Fine-tune a model package on the analyst's own labels and write a new package (no qgis).

Inputs are file paths: the bound sources (``engine.bind_modalities``, exactly as ``segment``
binds them), labels as a raster or as polygons with a class field (rasterised by
``engine.evaluation.rasterize_labels``, the one rasteriser), optional area-of-interest polygons.

1. Everything is read through the grid ``segment`` would use (``engine.grid.reference_grid``)
   and cropped to the labelled area, then written as one aligned raster stack, so the training
   data code of ``models.data`` (chips, augmentation, normalisation) is reused unchanged.
2. Label values or names are mapped to the package's classes; unknown ones are an error that
   names them, unless mapped to a new class (the class head is re-initialised for it, the rows
   of the kept classes are copied) or to ``ignore``. Pixels outside labels are ignored.
3. Validation is a spatially separate strip at the far end of the labelled area (holding about
   ``val_fraction`` of the labelled pixels). Each epoch ends with its mIoU (``engine.metrics``);
   the best weights are kept; early stopping, a time budget and cancel all end with them.
4. The result is exported with ``models.export.export_package`` (same format as bundled
   packages); the metadata records the base model, layers, classes and validation scores.
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..engine.binding import Source, reference_order
from ..engine.errors import Cancelled, EngineError
from ..engine.evaluation import LABEL_NODATA, MAX_CLASS_VALUE, rasterize_labels
from ..engine.grid import Grid, GridRequest, reference_grid
from ..engine.metrics import confusion_matrix, summarize
from ..engine.normalize import percentile_range
from ..engine.package import ClassInfo, ModelPackage, Normalization, load_package
from ..engine.reader import BandReader, SourceReader

FREEZE_CHOICES = ("none", "encoder", "all-but-head")
IGNORE_TARGET = "ignore"
NEW_PREFIX = "new:"
NEW_CLASS_COLORS = ("#6a3d9a", "#b15928", "#fb9a99", "#cab2d6", "#ffff99", "#fdbf6f", "#8dd3c7", "#bebada")
_ENCODER_WORDS = ("enc", "backbone", "stem", "stream")
_VAL_TILE = 512  # validation inference window (pixels), bounds memory on large areas
Window = Tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class LabelInput:
    """Where the labels are: a raster (``raster``, ``band``) or polygons (``vector``, ``class_field``)."""

    raster: Optional[str] = None
    band: int = 1
    vector: Optional[str] = None
    layer: Optional[str] = None
    class_field: Optional[str] = None
    aoi: Optional[str] = None  # polygons: only labels inside them are used
    aoi_layer: Optional[str] = None
    mapping: Mapping[str, str] = field(default_factory=dict)  # label -> class value/name, "new:<name>", "ignore"


@dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 20
    minutes: float = 0.0  # time budget; 0 = none (epochs only)
    learning_rate: float = 1e-3
    batch_size: int = 8
    chip: int = 128
    val_fraction: float = 0.2
    device: str = "auto"
    freeze: str = "none"
    patience: int = 4  # epochs without validation gain before stopping
    steps_per_epoch: int = 0  # 0 = enough chips to cover the training area about once
    seed: int = 0
    threads: Optional[int] = None  # torch CPU threads; None = leave torch's setting
    name: Optional[str] = None  # new package name; None = "<base>-finetuned"


@dataclass
class EpochReport:
    epoch: int
    steps: int
    loss: float
    val_miou: Optional[float]
    seconds: float
    best: bool


@dataclass
class FinetuneResult:
    onnx_path: Path
    epochs: int
    best_epoch: int
    start_val_miou: Optional[float]
    best_val_miou: Optional[float]
    stopped: str  # "epochs", "early stopping", "time budget", "cancelled"
    history: List[EpochReport]
    classes: List[ClassInfo]
    messages: List[str] = field(default_factory=list)


Log = Callable[[str], None]


# -- classes ---------------------------------------------------------------------------------
class ClassResolver:
    """Label value or name -> class value of the new package (package classes, then new ones)."""

    def __init__(self, classes: Sequence[ClassInfo], mapping: Mapping[str, str]):
        self.classes = list(classes)
        self.mapping = {str(k).strip().lower(): str(v).strip() for k, v in mapping.items()}
        self.unknown: Dict[str, int] = {}

    def _package_value(self, key: str) -> Optional[int]:
        k = key.strip().lower()
        for c in self.classes:
            if c.name.strip().lower() == k or str(c.value) == k:
                return c.value
        return None

    def _new_class(self, name: str) -> int:
        for c in self.classes:
            if c.name.lower() == name.lower():
                return c.value
        used = {c.value for c in self.classes}
        value = next(v for v in range(1, MAX_CLASS_VALUE + 1) if v not in used)
        color = NEW_CLASS_COLORS[sum(1 for c in self.classes if c.color in NEW_CLASS_COLORS) % len(NEW_CLASS_COLORS)]
        self.classes.append(ClassInfo(value, name, color))
        return value

    def __call__(self, raw: Any) -> Optional[int]:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        key = str(raw).strip()
        target = self.mapping.get(key.lower())
        if target is not None:
            if target.lower() == IGNORE_TARGET:
                return None
            if target.lower().startswith(NEW_PREFIX):
                return self._new_class(target[len(NEW_PREFIX):].strip() or key)
            value = self._package_value(target)
            if value is None:
                raise EngineError(f"the class mapping sends label '{key}' to '{target}', which is not a class of "
                                  f"the model ({self.describe()}); write 'new:{target}' to add it as a new class")
            return value
        value = self._package_value(key)
        if value is None:
            self.unknown[key] = self.unknown.get(key, 0) + 1
            raise EngineError(f"label class '{key}' is not a class of the model ({self.describe()}); map it to a "
                              f"class, to 'new:<name>' for a new class, or to 'ignore'")
        return value

    def describe(self) -> str:
        return ", ".join(f"{c.value} {c.name}" for c in self.classes)


# -- data ------------------------------------------------------------------------------------
def _write_tif(path: Path, grid: Grid, data: np.ndarray, nodata: float) -> None:
    from osgeo import gdal

    dtype = gdal.GDT_Byte if data.dtype == np.uint8 else gdal.GDT_Float32
    ds = gdal.GetDriverByName("GTiff").Create(str(path), grid.width, grid.height, data.shape[0], dtype)
    ds.SetGeoTransform(grid.geotransform)
    ds.SetProjection(grid.crs_wkt)
    for i in range(data.shape[0]):
        band = ds.GetRasterBand(i + 1)
        band.SetNoDataValue(nodata)
        band.WriteArray(data[i])
        band = None  # a band must not outlive its dataset
    ds = None


def _sub_grid(grid: Grid, window: Window) -> Grid:
    x0, y0, x1, y1 = window
    gt = grid.geotransform
    return Grid(grid.crs_wkt, (gt[0] + x0 * gt[1], gt[1], 0.0, gt[3] + y0 * gt[5], 0.0, gt[5]), x1 - x0, y1 - y0)


def _label_values(labels: LabelInput, grid: Grid, resolver: ClassResolver, work: Path,
                  log: Log) -> np.ndarray:
    """Class values on ``grid`` (uint8, ``LABEL_NODATA`` = unlabelled), AOI applied."""
    if labels.vector:
        if not labels.class_field:
            raise EngineError("choose the class field of the label polygons")
        burnt = rasterize_labels(labels.vector, labels.class_field, grid, str(work / "labels_full.tif"),
                                 layer=labels.layer, value_of=resolver)
        for m in burnt.messages:
            log(m)
        if burnt.skipped:
            log(f"{burnt.skipped} label feature(s) without geometry, or mapped to 'ignore', were skipped")
        reader = BandReader(burnt.path, (1,), grid, "nearest")
        data, ok = reader.read(0, 0, grid.width, grid.height)
        reader.close()
        values = np.where(ok, data[0], LABEL_NODATA).astype(np.uint8)
    elif labels.raster:
        reader = BandReader(labels.raster, (labels.band,), grid, "nearest")
        data, ok = reader.read(0, 0, grid.width, grid.height)
        reader.close()
        raw = np.where(ok, np.rint(data[0]), -1).astype(np.int64)
        values = np.full(raw.shape, LABEL_NODATA, np.uint8)
        for v in np.unique(raw[ok]):
            target = resolver(int(v))
            if target is not None:
                values[raw == v] = target
    else:
        raise EngineError("give labels: a label raster or polygons with a class field")
    if labels.aoi:
        mask = rasterize_labels(labels.aoi, None, grid, str(work / "aoi.tif"), layer=labels.aoi_layer)
        reader = BandReader(mask.path, (1,), grid, "nearest")
        inside, ok = reader.read(0, 0, grid.width, grid.height)
        reader.close()
        values[~(ok & (inside[0] == 1))] = LABEL_NODATA
    return values


def _split(index: np.ndarray, val_fraction: float) -> Tuple[Window, Optional[Window], str]:
    """Training and validation windows: the validation strip is cut across the longer side so that it
    holds about ``val_fraction`` of the labelled pixels (spatially separate from training)."""
    h, w = index.shape
    labelled = index != 255
    axis_cols = w >= h
    counts = labelled.sum(0 if axis_cols else 1)
    total = counts.sum()
    if val_fraction <= 0:
        return (0, 0, w, h), None, "none"
    cum = np.cumsum(counts)
    cut = int(np.searchsorted(cum, total * (1.0 - val_fraction))) + 1  # first column after the training share
    n = w if axis_cols else h
    cut = min(max(cut, 1), n - 1)
    if axis_cols:
        return (0, 0, cut, h), (cut, 0, w, h), f"right strip from column {cut}"
    return (0, 0, w, cut), (0, cut, w, h), f"bottom strip from row {cut}"


# -- network ---------------------------------------------------------------------------------
def _build_network(package: ModelPackage, classes: Sequence[ClassInfo], log: Log):
    """The package's network with its weights; a head resized for new classes keeps the rows of old ones."""
    from .networks.registry import build_network, load_network

    try:
        base = load_network(package)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    old = [c.value for c in package.metadata.classes]
    new = [c.value for c in classes]
    if new == old:
        return base, dict(package.metadata.extra["torch"]["config"])
    recipe = package.metadata.extra["torch"]
    config = dict(recipe["config"])
    config["num_classes"] = len(new)
    net = build_network(recipe["architecture"], config)
    state = net.state_dict()
    resized = []
    for key, tensor in base.state_dict().items():
        if key not in state:
            continue
        target = state[key]
        if target.shape == tensor.shape:
            state[key] = tensor
        elif tensor.shape[0] == len(old) and target.shape[0] == len(new) and tensor.shape[1:] == target.shape[1:]:
            for i, value in enumerate(old):  # rows of kept classes keep their weights
                target[new.index(value)] = tensor[i]
            resized.append(key)
    net.load_state_dict(state)
    log(f"class head re-initialised for {len(new) - len(old)} new class(es) ({len(resized)} tensors resized)")
    return net, config


def _freeze(net, how: str, num_classes: int, log: Log) -> None:
    if how not in FREEZE_CHOICES:
        raise EngineError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}")
    if how == "none":
        return
    head = set()
    for name, p in net.named_parameters():
        if p.shape and p.shape[0] == num_classes:  # layers producing class scores (and their biases)
            head.add(name)
    frozen = 0
    for name, p in net.named_parameters():
        top = name.split(".")[0].lower()
        if how == "encoder":
            freeze = any(w in top for w in _ENCODER_WORDS)
        else:
            freeze = name not in head
        if freeze:
            p.requires_grad_(False)
            frozen += p.numel()
    total = sum(p.numel() for p in net.parameters())
    if how == "encoder" and frozen == 0:
        log("Warning: this network has no layer recognisable as an encoder; nothing was frozen")
    else:
        log(f"frozen: {how} ({frozen / max(1, total):.0%} of {total} parameters)")


def _validate(net, areas, mods: Sequence[str], bands: Mapping[str, int], norms, num_classes: int,
              device) -> Optional[float]:
    """mIoU on the validation windows (classes absent from both reference and prediction skipped)."""
    import torch

    from ..engine.normalize import normalize

    cm = np.zeros((num_classes, num_classes), np.int64)
    multiple = int(getattr(net, "size_multiple", 1))
    net.eval()
    for area in areas:
        x0, y0, x1, y1 = area.window
        for ty in range(y0, y1, _VAL_TILE):
            for tx in range(x0, x1, _VAL_TILE):
                w, h = min(_VAL_TILE, x1 - tx), min(_VAL_TILE, y1 - ty)
                label = area.stack.read_label(tx, ty, w, h).astype(np.int64) - 1  # stored as index + 1
                label[label < 0] = 255
                if not (label != 255).any():
                    continue
                ph, pw = -h % multiple, -w % multiple
                feed, present = {}, []
                for m in mods:
                    if m in area.stack.files:
                        d, ok = area.stack.read(m, tx, ty, w, h)
                        x = normalize(d, ok, norms[m])
                        present.append(1.0)
                    else:
                        x = np.zeros((bands[m], h, w), np.float32)
                        present.append(0.0)
                    feed[m] = torch.from_numpy(np.pad(x, ((0, 0), (0, ph), (0, pw))))[None].to(device)
                with torch.no_grad():
                    logits = net(feed, torch.tensor([present], dtype=torch.float32, device=device))["logits"]
                pred = logits[0, :, :h, :w].argmax(0).cpu().numpy()
                cm += confusion_matrix(label, pred, num_classes, ignore_index=255)
    if cm.sum() == 0:
        return None
    present_classes = [i for i in range(num_classes) if cm[i].sum() > 0]
    return float(summarize(cm, [str(i) for i in range(num_classes)], foreground=present_classes)["miou"])


# -- main ------------------------------------------------------------------------------------
def finetune(package_path: "str | Path", sources: Sequence[Source], labels: LabelInput, out_dir: "str | Path",
             options: FinetuneOptions = FinetuneOptions(), *, log: Optional[Log] = None,
             progress: Optional[Callable[[float, str], None]] = None,
             is_cancelled: Optional[Callable[[], bool]] = None,
             on_epoch: Optional[Callable[[EpochReport], None]] = None) -> FinetuneResult:
    """Fine-tune ``package_path`` on ``labels`` over ``sources``; write a new package into ``out_dir``.

    Raises :class:`EngineError` for bad inputs (messages for an analyst) and :class:`Cancelled`
    when cancelled before any epoch finished (nothing is written then).
    """
    log = log or (lambda text: None)
    progress = progress or (lambda fraction, text: None)
    is_cancelled = is_cancelled or (lambda: False)
    try:
        import torch
    except ImportError:
        raise EngineError("fine-tuning needs PyTorch (torch), which is not installed") from None
    if options.threads:
        torch.set_num_threads(int(options.threads))
    package = load_package(package_path)
    meta = package.metadata
    if package.weights_path is None or not isinstance(meta.extra.get("torch"), dict):
        raise EngineError(f"model '{meta.name}' has no torch weights to start fine-tuning from")
    if not sources:
        raise EngineError("no input layer is bound to the model")
    work = Path(tempfile.mkdtemp(prefix="modalseg-finetune-"))
    try:
        return _finetune(torch, package, list(sources), labels, Path(out_dir), options, work, log, progress,
                         is_cancelled, on_epoch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prepare(package: ModelPackage, sources: List[Source], labels: LabelInput, options: FinetuneOptions,
             work: Path, log: Log):
    """Grid, aligned stack, class list, areas and normalisation recipes."""
    from .data.chips import Area
    from .data.rasters import RasterStack

    meta = package.metadata
    grid = reference_grid(reference_order(sources), GridRequest())
    resolver = ClassResolver(meta.classes, labels.mapping)
    values = _label_values(labels, grid, resolver, work, log)
    classes = resolver.classes
    class_values = [c.value for c in classes]
    index_of = {v: i for i, v in enumerate(class_values)}
    labelled = values != LABEL_NODATA
    if not labelled.any():
        raise EngineError("no labelled pixel falls on the input layers (the labels are empty there, outside "
                          "the area of interest, or all mapped to 'ignore')")
    counts = {c.value: int((values == c.value).sum()) for c in classes}
    for c in classes:
        log(f"  label {c.value} {c.name}: {counts[c.value]} px")
    empty = [c.name for c in classes if counts[c.value] == 0]
    if empty:
        log(f"Warning: no labelled pixel of class(es) {', '.join(empty)}; the model gets no new examples of them")
    # crop to the labelled area plus a margin of half a chip (context for the chips at its edge)
    rows, cols = np.nonzero(labelled)
    margin = options.chip // 2
    window = (max(0, int(cols.min()) - margin), max(0, int(rows.min()) - margin),
              min(grid.width, int(cols.max()) + 1 + margin), min(grid.height, int(rows.max()) + 1 + margin))
    crop = _sub_grid(grid, window)
    x0, y0, x1, y1 = window
    index = np.full((crop.height, crop.width), 255, np.uint8)
    sub = values[y0:y1, x0:x1]
    for v, i in index_of.items():
        index[sub == v] = i
    files: Dict[str, Path] = {}
    norms: Dict[str, Normalization] = {}
    for source in sources:
        reader = SourceReader(source, crop)
        data, ok = reader.read(0, 0, crop.width, crop.height)
        spec = meta.modality(source.modality).normalization
        if spec.type == "percentile":  # statistics of the whole layer, as segment computes them
            full = SourceReader(source, grid)
            sample, sample_ok = full.sample()
            full.close()
            lo, hi = percentile_range(sample, sample_ok, spec.low, spec.high)
            spec = Normalization("minmax", min=tuple(lo.tolist()), max=tuple(hi.tolist()), clip=spec.clip)
        reader.close()
        data = np.where(ok[None], data, -9999.0).astype(np.float32)
        files[source.modality] = work / f"{source.modality}.tif"
        _write_tif(files[source.modality], crop, data, -9999.0)
        norms[source.modality] = spec
    label_path = work / "label.tif"
    _write_tif(label_path, crop, np.where(index == 255, 0, index + 1).astype(np.uint8)[None], 0)
    stack = RasterStack("labels", files, label_path)
    train_w, val_w, how = _split(index, options.val_fraction)
    train_area = Area(stack, train_w)
    val_areas = [Area(stack, val_w)] if val_w else []
    val_px = 0
    if val_w:
        vx0, vy0, vx1, vy1 = val_w
        val_px = int((index[vy0:vy1, vx0:vx1] != 255).sum())
    tx0, ty0, tx1, ty1 = train_w
    if not (index[ty0:ty1, tx0:tx1] != 255).any():
        raise EngineError("the training part of the labelled area holds no label; lower the validation fraction")
    if val_areas and val_px == 0:
        val_areas = []
    log(f"labelled area: {crop.width} x {crop.height} px at {grid.gsd_metres():.3g} m; "
        + (f"validation = {how} ({val_px} labelled px)" if val_areas else
           "Warning: no validation pixels; the best epoch is chosen by training loss"))
    freq = np.bincount(index[index != 255], minlength=len(classes)).astype(np.float64)
    return grid, crop, stack, classes, train_area, val_areas, norms, freq, counts


def _finetune(torch, package: ModelPackage, sources: List[Source], labels: LabelInput, out_dir: Path,
              options: FinetuneOptions, work: Path, log: Log, progress, is_cancelled, on_epoch) -> FinetuneResult:
    import torch.nn.functional as F

    from .data.chips import IGNORE, ChipSampler
    from .export import ExportError, export_package
    from .train import lr_at

    meta = package.metadata
    t_start = time.time()
    grid, crop, stack, classes, train_area, val_areas, norms, freq, counts = _prepare(
        package, sources, labels, options, work, log)
    n_classes = len(classes)
    mods = list(meta.modality_names)
    bands = {m.name: m.bands for m in meta.modalities}
    multiple = max(1, meta.size_multiple)
    chip = max(multiple, int(math.ceil(options.chip / multiple)) * multiple)
    sampler = ChipSampler([train_area], mods, bands, {m: m for m in mods}, norms,
                          list(range(1, n_classes + 1)), chip=chip, min_labelled=0.02)
    device = torch.device("cuda" if options.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    if options.device == "cuda" and device.type != "cuda":
        raise EngineError("CUDA was requested but torch sees no GPU (choose device 'auto' or 'cpu')")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    net, config = _build_network(package, classes, log)
    net = net.to(device)
    _freeze(net, options.freeze, n_classes, log)
    trainable = [p for p in net.parameters() if p.requires_grad]
    if not trainable:
        raise EngineError("every layer is frozen; nothing would be trained")
    opt = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=1e-4)
    # rare classes weigh more (inverse square root of frequency), absent ones are irrelevant
    weights = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1.0) / max(freq.sum(), 1.0)), 0.0)
    weights = weights / weights[freq > 0].mean()
    class_w = torch.tensor(weights, dtype=torch.float32, device=device)
    x0, y0, x1, y1 = train_area.window
    # an epoch draws about the training area's pixels once, but at least 16 batches: on a small
    # labelled area shorter epochs would let early stopping fire on noise
    steps = options.steps_per_epoch or int(min(200, max(16, math.ceil((x1 - x0) * (y1 - y0)
                                                                       / (options.batch_size * chip * chip)))))
    epochs = max(1, int(options.epochs))
    budget = float(options.minutes) * 60.0 if options.minutes and options.minutes > 0 else None
    total_steps = epochs * steps
    warmup = max(1, total_steps // 20)
    use_dual = hasattr(net, "forward_train")
    log(f"fine-tuning {meta.name} on {device.type}: {epochs} epoch(s) of {steps} steps, batch "
        f"{options.batch_size}, chips {chip} px, learning rate {options.learning_rate:g}"
        + (f", time budget {options.minutes:g} min" if budget else ""))

    def validate() -> Optional[float]:
        return _validate(net, val_areas, mods, bands, norms, n_classes, device) if val_areas else None

    start_miou = validate()
    if start_miou is not None:
        log(f"validation mIoU of the starting model: {start_miou:.3f}")
    history: List[EpochReport] = []
    best_score, best_state, best_epoch = -math.inf, None, 0
    start_state = copy.deepcopy(net.state_dict()) if start_miou is not None else None
    bad_epochs, stopped, step = 0, "epochs", 0
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        net.train()
        loss_sum, done = 0.0, 0
        for _ in range(steps):
            if is_cancelled():
                stopped = "cancelled"
                break
            if budget is not None and time.time() - t0 >= budget:
                stopped = "time budget"
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total_steps, options.learning_rate, warmup)
            b = sampler.batch(options.batch_size, rng)
            xs = {m: torch.from_numpy(b[m]).to(device) for m in mods}
            present = torch.from_numpy(b["present"]).to(device)
            y = torch.from_numpy(b["label"]).long().to(device)
            if use_dual:  # the SGMA recipe (models.train): full path and modality-agnostic path
                o = net.forward_train(xs, present, mas=True)
                loss = 2.0 * F.cross_entropy(o["logits"], y, weight=class_w, ignore_index=IGNORE) + \
                    F.cross_entropy(o["mas_logits"], y, weight=class_w, ignore_index=IGNORE)
            else:
                loss = F.cross_entropy(net(xs, present)["logits"], y, weight=class_w, ignore_index=IGNORE)
            if not torch.isfinite(loss):
                continue  # a chip whose labels all fell outside after augmentation: nothing to learn
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 5.0)
            opt.step()
            step += 1
            done += 1
            loss_sum += float(loss.item())
            fraction = step / total_steps
            if budget is not None:
                fraction = max(fraction, (time.time() - t0) / budget)
            progress(min(fraction, 1.0), f"epoch {epoch}/{epochs}, loss {loss_sum / done:.3f}")
        if stopped == "cancelled" or done == 0:
            break
        val = validate()
        loss_avg = loss_sum / done
        score = val if val is not None else -loss_avg
        improved = score > best_score + 1e-4
        if improved:
            best_score, best_state, best_epoch, bad_epochs = score, copy.deepcopy(net.state_dict()), epoch, 0
        else:
            bad_epochs += 1
        report = EpochReport(epoch, done, loss_avg, val, time.time() - t0, improved)
        history.append(report)
        log(f"epoch {epoch}/{epochs}: loss {loss_avg:.3f}"
            + (f", validation mIoU {val:.3f}" if val is not None else "") + (" (best)" if improved else ""))
        if on_epoch:
            on_epoch(report)
        if stopped != "epochs":
            break
        if val_areas and options.patience > 0 and bad_epochs >= options.patience:
            stopped = "early stopping"
            log(f"early stopping: no validation gain for {bad_epochs} epochs")
            break
    if best_state is None:
        raise Cancelled("fine-tuning was cancelled before the first epoch finished; no model was written")
    if start_state is not None and start_miou is not None and start_miou >= best_score:
        # validation says training made the model worse on this area: do not hand that over
        log(f"Warning: no epoch beat the starting model on validation (mIoU {start_miou:.3f} vs "
            f"{best_score:.3f}); the package keeps the starting weights. More or more varied labels, "
            "a lower learning rate or freezing the encoders may help.")
        best_state, best_score, best_epoch = start_state, start_miou, 0
    if stopped == "cancelled":
        log(f"cancelled: writing the best model so far (epoch {best_epoch})")
    elif stopped == "time budget":
        log(f"time budget reached: writing the best model so far (epoch {best_epoch})")
    net.load_state_dict(best_state)
    net = net.to("cpu").eval()
    for p in net.parameters():
        p.requires_grad_(True)
    best_val = best_score if val_areas else None
    metadata = _new_metadata(package, classes, sources, labels, options, grid, history, start_miou, best_val,
                             best_epoch, counts, stopped, time.time() - t_start)
    progress(1.0, "exporting the model package")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", metadata["name"]).strip("_") or "finetuned"
    try:
        onnx_path = export_package(net, metadata, out_dir, architecture=meta.extra["torch"]["architecture"],
                                   config=config, file_name=stem)
    except ExportError as exc:
        raise EngineError(f"the fine-tuned model could not be exported: {exc}") from None
    log(f"wrote {onnx_path}")
    return FinetuneResult(onnx_path, len(history), best_epoch, start_miou, best_val, stopped, history, classes)


def _new_metadata(package: ModelPackage, classes: Sequence[ClassInfo], sources: Sequence[Source],
                  labels: LabelInput, options: FinetuneOptions, grid: Grid, history: Sequence[EpochReport],
                  start_miou: Optional[float], best_val: Optional[float], best_epoch: int,
                  counts: Mapping[int, int], stopped: str, seconds: float) -> Dict[str, Any]:
    meta = package.metadata
    d = json.loads(json.dumps(meta.to_dict()))  # tuples -> lists, as the metadata reader expects
    for key in ("presence_input", "has_robustness"):
        d.pop(key, None)  # export_package sets them from the network
    name = options.name or f"{meta.name}-finetuned"
    gsd = grid.gsd_metres()
    d.update({
        "name": name, "version": "1.0.0",
        "description": f"{meta.name} {meta.version} fine-tuned on local labels. " + meta.description,
        "training_data": f"{meta.training_data}; fine-tuned on "
                         f"{os.path.basename(labels.vector or labels.raster or '')}",
        "classes": [{"value": c.value, "name": c.name, "color": c.color} for c in classes],
        "gsd": {"native": gsd, "min": min(meta.gsd.min, gsd), "max": max(meta.gsd.max, gsd)},
    })
    r = lambda x: None if x is None else round(float(x), 4)  # noqa: E731 - local rounding
    d["metrics"] = {
        "protocol": "fine-tuning validation: a spatially separate strip of the labelled area holding about "
                    f"{options.val_fraction:.0%} of the labelled pixels; mIoU over the classes it contains",
        "validation_miou": r(best_val), "validation_miou_start": r(start_miou),
        "base_metrics": meta.metrics,
    }
    extra = {k: v for k, v in meta.extra.items() if k != "torch"}
    extra["finetune"] = {
        "base_model": {"name": meta.name, "version": meta.version, "file": package.onnx_path.name},
        "layers": [s.describe() for s in sources],
        "labels": {"raster": labels.raster, "vector": labels.vector, "field": labels.class_field, "aoi": labels.aoi,
                   "mapping": dict(labels.mapping)},
        "label_pixels": {str(k): int(v) for k, v in counts.items()},
        "options": {k: v for k, v in asdict(options).items()},
        "epochs": len(history), "best_epoch": best_epoch, "stopped": stopped, "seconds": round(seconds, 1),
        "history": [{"epoch": h.epoch, "loss": round(h.loss, 4), "val_miou": r(h.val_miou)} for h in history],
    }
    d["extra"] = extra
    return d
