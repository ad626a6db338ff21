"""The fine-tuning loop: epochs of the network's own training step (``training_loss``, the one
``models.train`` uses) on chips of the labelled area, validation mIoU after each, the best
weights kept; early stopping, a time budget and cancel all end with them, exported as a package."""
from __future__ import annotations

import copy
import math
import re
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Mapping, Optional, Sequence

import numpy as np

from ...engine.binding import Source
from ...engine.errors import WARNING_PREFIX, Cancelled, EngineError
from ...engine.gdal_mode import gdal_exceptions
from ...engine.metrics import confusion_matrix, summarize
from ...engine.normalize import normalize
from ...engine.package import ModelPackage, load_package
from ..data.chips import IGNORE
from .labels import LabelInput, Log
from .metadata import new_metadata
from .network import freeze, keep_batch_norm_statistics, start_network
from .options import FINETUNE_DEFAULTS, FinetuneOptions
from .prepare import TrainingData, prepare_training_data
from .results import EpochReport, FinetuneResult

_VAL_TILE = 512  # validation inference window (pixels), bounds memory on large areas


def _validate(net, areas, mods: Sequence[str], bands: Mapping[str, int], norms, num_classes: int,
              device) -> Optional[float]:
    """mIoU on the validation windows (classes absent from both reference and prediction skipped)."""
    import torch

    cm = np.zeros((num_classes, num_classes), np.int64)
    multiple = int(getattr(net, "size_multiple", 1))
    net.eval()
    for area in areas:
        x0, y0, x1, y1 = area.window
        for ty in range(y0, y1, _VAL_TILE):
            for tx in range(x0, x1, _VAL_TILE):
                w, h = min(_VAL_TILE, x1 - tx), min(_VAL_TILE, y1 - ty)
                label = area.stack.read_label(tx, ty, w, h).astype(np.int64) - 1  # stored as index + 1
                label[label < 0] = IGNORE
                if not (label != IGNORE).any():
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
                cm += confusion_matrix(label, pred, num_classes, ignore_index=IGNORE)
    if cm.sum() == 0:
        return None
    present_classes = [i for i in range(num_classes) if cm[i].sum() > 0]
    return float(summarize(cm, [str(i) for i in range(num_classes)], foreground=present_classes)["miou"])


@gdal_exceptions()
def finetune(package_path: "str | Path", sources: Sequence[Source], labels: LabelInput, out_dir: "str | Path",
             options: FinetuneOptions = FINETUNE_DEFAULTS, *, log: Optional[Log] = None,
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


def _class_weights(frequency: np.ndarray) -> np.ndarray:
    """Rare classes weigh more (inverse square root of frequency), absent ones are irrelevant."""
    weights = np.where(frequency > 0, 1.0 / np.sqrt(np.maximum(frequency, 1.0) / max(frequency.sum(), 1.0)), 0.0)
    return weights / weights[frequency > 0].mean()


def _teacher(net, same_classes: bool, options: FinetuneOptions, log: Log):
    """A frozen copy of the starting network whose decisions the tuned one keeps on unlabelled
    pixels (``options.keep_prior``); None when off or when the classes changed (a new head has
    nothing to keep)."""
    if options.keep_prior <= 0 or not same_classes:
        return None
    teacher = copy.deepcopy(net).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    log(f"unlabelled pixels keep the starting model's decisions (weight {options.keep_prior:g})")
    return teacher


def _finetune(torch, package: ModelPackage, sources: List[Source], labels: LabelInput, out_dir: Path,
              options: FinetuneOptions, work: Path, log: Log, progress, is_cancelled, on_epoch) -> FinetuneResult:
    from ..data.chips import ChipSampler
    from ..export import ExportError, export_package
    from ..networks._base import TrainingBatch
    from ..nn.losses import LossSettings
    from ..optimisation import apply_gradients, lr_at, set_learning_rate
    from ..weight_storage import storage_of

    meta = package.metadata
    t_start = time.time()
    data: TrainingData = prepare_training_data(package, sources, labels, options, work, log)
    classes, train_area, val_areas, norms = data.classes, data.train_area, data.val_areas, data.norms
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
    net, config = start_network(package, classes, log)
    net = net.to(device)
    freeze(net, options.freeze, n_classes, log)
    trainable = [p for p in net.parameters() if p.requires_grad]
    if not trainable:
        raise EngineError("every layer is frozen; nothing would be trained")
    opt = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=1e-4)
    settings = LossSettings(class_weights=torch.tensor(_class_weights(data.class_frequency), dtype=torch.float32,
                                                       device=device))
    # A head grown for new classes starts untrained on them: the starting model has no decisions to
    # keep on unlabelled pixels, and is no candidate for the model written.
    same_classes = [c.value for c in classes] == list(meta.class_values)
    teacher = _teacher(net, same_classes, options, log)
    x0, y0, x1, y1 = train_area.window
    # an epoch draws about the training area's pixels once, but at least 16 batches: on a small
    # labelled area shorter epochs would let early stopping fire on noise
    steps = options.steps_per_epoch or int(min(200, max(16, math.ceil((x1 - x0) * (y1 - y0)
                                                                       / (options.batch_size * chip * chip)))))
    epochs = max(1, int(options.epochs))
    budget = float(options.minutes) * 60.0 if options.minutes and options.minutes > 0 else None
    total_steps = epochs * steps
    warmup = max(1, total_steps // 20)
    log(f"fine-tuning {meta.name} on {device.type}: {epochs} epoch(s) of {steps} steps, batch "
        f"{options.batch_size}, chips {chip} px, learning rate {options.learning_rate:g}"
        + (f", time budget {options.minutes:g} min" if budget else ""))

    def validate() -> Optional[float]:
        return _validate(net, val_areas, mods, bands, norms, n_classes, device) if val_areas else None

    start_miou = validate() if same_classes else None
    if start_miou is not None:
        log(f"validation mIoU of the starting model: {start_miou:.3f}")
    history: List[EpochReport] = []
    best_score, best_state, best_epoch = -math.inf, None, 0
    start_state = copy.deepcopy(net.state_dict()) if start_miou is not None else None
    bad_epochs, stopped, step = 0, "epochs", 0
    t0 = time.time()
    for epoch in range(1, epochs + 1):
        net.train()
        keep_batch_norm_statistics(net)
        loss_sum, done = 0.0, 0
        for _ in range(steps):
            if is_cancelled():
                stopped = "cancelled"
                break
            if budget is not None and time.time() - t0 >= budget:
                stopped = "time budget"
                break
            set_learning_rate(opt, lr_at(step, total_steps, options.learning_rate, warmup))
            b = sampler.batch(options.batch_size, rng)
            target = torch.from_numpy(b["label"]).long().to(device)
            if not bool((target != IGNORE).any()):
                continue  # a chip whose labels all fell outside after augmentation: nothing to learn
            batch = TrainingBatch({m: torch.from_numpy(b[m]).to(device) for m in mods},
                                  torch.from_numpy(b["present"]).to(device), target)
            step_settings = settings
            if teacher is not None:
                with torch.no_grad():
                    step_settings = replace(settings, teacher_logits=teacher(batch.inputs, batch.present)["logits"],
                                            distill_weight=options.keep_prior)
            loss, _ = net.training_loss(batch, step_settings)
            if not torch.isfinite(loss):
                continue  # a diverging step is not taken
            apply_gradients(loss, opt, trainable)
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
        log(WARNING_PREFIX + f"no epoch beat the starting model on validation (mIoU {start_miou:.3f} vs "
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
    metadata = new_metadata(package, data, sources, labels, options, history, start_miou, best_val, best_epoch,
                            stopped, time.time() - t_start)
    progress(1.0, "exporting the model package")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", metadata["name"]).strip("_") or "finetuned"
    try:
        onnx_path = export_package(net, metadata, out_dir, architecture=meta.extra["torch"]["architecture"],
                                   config=config, file_name=stem,
                                   weight_storage=storage_of(meta.extra))  # as the package it tunes
    except ExportError as exc:
        raise EngineError(f"the fine-tuned model could not be exported: {exc}") from None
    log(f"wrote {onnx_path}")
    return FinetuneResult(onnx_path, len(history), best_epoch, start_miou, best_val, stopped, history, classes)

