"""Training CLI: ``python -m modalseg.models.train --config training/sgma_default.json``.

Chips are drawn on the fly from aligned raster stacks (see ``models.data.chips``); every stack
is split into a training area and a spatially separate validation strip (config
``data.val_fraction`` / ``data.val_side``). Each step's loss is the network's own
``training_loss`` (its paper's auxiliary losses included: SGMA's dual path, MoBaNet's masking,
ASANet's auxiliary head, AMMNet's alignment), with the recipe's class weights, optional hard-pixel
term (``train.hard_pixel``) and overrides of the network's loss weights (``train.loss_terms``);
modality dropout comes from the sampler (``data.drop_prob``). Progress lines go to stdout; a checkpoint
(``<out>.ckpt/last.pt``: weights, optimiser, step, RNG state, best score) is written every
``ckpt_every`` steps and ``--resume`` continues from it. At the end the best weights (by
validation score) are evaluated per modality subset and exported as a model package.
"""
from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..engine.metrics import SubsetEvaluator, modality_subsets
from ..engine.normalize import normalize, own_statistics
from ..engine.vocabulary import DEFAULT_GROUND_WINDOW_M
from ..engine.package import GsdRange
from .data.chips import IGNORE, Area, ChipSampler, as_normalization, resample, resample_label, split_area
from .data.estimated_ground import DSM_KEY, EstimatedGroundCache
from .data.rasters import find_lidar_stacks
from .data.holdout import is_held_out, is_held_out_optical
from .data.shared_data import PLUGIN_ROOT, SHARED_DATA
from .optimisation import apply_gradients, lr_at, set_learning_rate

CLASS_NAMES = ["ground", "building", "low_vegetation", "tree", "water", "other"]
MIN_SUPPORT = 200  # foreground classes with fewer validation pixels in a group stay out of its mIoU


def load_config(path: "str | Path") -> Dict[str, Any]:
    """A training recipe; one that names ``"extends": "<recipe>.json"`` (beside it) is that recipe with
    its own keys laid over it (``merged_config``), so a variant states only what it changes."""
    path = Path(path).resolve()
    cfg = json.loads(path.read_text(encoding="utf-8"))
    base = cfg.pop("extends", None)
    if base:
        cfg = merged_config(load_config(path.parent / base), cfg)
    cfg["_config_path"] = str(path)
    return cfg


def merged_config(base: Dict[str, Any], changes: Dict[str, Any]) -> Dict[str, Any]:
    """``base`` with ``changes`` laid over it: mappings merge key by key, anything else (numbers,
    strings, lists such as ``data.folders``) is replaced whole."""
    out = dict(base)
    for key, value in changes.items():
        out[key] = (merged_config(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict)
                    else value)
    return out


def _resolve(p: str, base: Path) -> Path:
    q = Path(p)
    return q if q.is_absolute() else (base / q).resolve()


def build_areas(cfg: Dict[str, Any]) -> Tuple[List[Area], List[Area], List[float], List[str]]:
    """Training areas, validation areas and each validation area's group, and sampling weights
    (each group of folders gets its configured share). Validation is the right strip of every
    tile (``val_fraction``, per folder entry or for the recipe), or, for the stacks a folder entry
    names in ``validation_tiles``, the whole tile, which then never trains (strips neighbour
    training pixels and overstate; whole tiles do not). The held-out tiles (``data.holdout``) are
    left out of both: they are for the final figures only."""
    data = cfg["data"]
    root = _resolve(data.get("root", str(SHARED_DATA)), PLUGIN_ROOT)
    sources = sorted({m["source"] for m in cfg["modalities"]} | ({DSM_KEY} if data.get("estimated_ground") else set()))
    train, val, weights, groups = [], [], [], []
    for entry in data["folders"]:
        group = entry.get("group") or entry.get("path") or entry.get("ortho") or entry["format"]
        if entry.get("format") == "ombria":  # chips, not tiles: validation = a seeded share of chips
            from .data.ombria import find_ombria_chips, validation_split
            a_list, b_list = validation_split(find_ombria_chips(_resolve(entry["path"], root), sources),
                                              float(data.get("val_fraction", 0.1)), int(data.get("val_seed", 0)))
            train += a_list
            val += b_list
            weights += [float(entry.get("weight", 1.0)) / max(1, len(a_list))] * len(a_list)
            groups += [group] * len(b_list)
            continue
        if entry.get("format") == "point_cloud":  # an orthophoto labelled from its LiDAR cloud
            stacks = [point_cloud_stack(entry, root, cfg)]
        elif entry.get("format") == "synthetic":  # procedural scenes (models/data/synthetic.py), written once
            stacks = find_lidar_stacks(synthetic_folder(entry), sources)
        else:
            stacks = find_lidar_stacks(_resolve(entry["path"], root), sources)
            stacks = [s for s in stacks if not any(x in s.name for x in entry.get("exclude", []))
                      and all(x in s.name for x in entry.get("include", []))
                      and not is_held_out(Path(entry["path"]).name, s.name)]
        whole = set(entry.get("validation_tiles", ()))  # validated on whole, never trained on
        fraction = float(entry.get("val_fraction", data.get("val_fraction", 0.2)))
        trained = [s for s in stacks if s.name not in whole]
        area_px = sum(s.width * s.height for s in trained)
        for s in stacks:
            if s.name in whole:
                val.append(Area(s, (0, 0, s.width, s.height)))
                groups.append(group)
                continue
            a, b = split_area(s, fraction, data.get("val_side", "right"))
            train.append(a)
            weights.append(float(entry.get("weight", 1.0)) * a.pixels / max(1, area_px))
            if b.pixels:  # val_fraction 0: the tile trains whole
                val.append(b)
                groups.append(group)
    return train, val, weights, groups


def synthetic_folder(entry: Dict[str, Any]) -> Path:
    """The folder of a ``"format": "synthetic"`` entry: ``count`` scenes of ``size`` px at ``gsd`` m
    (``models.data.synthetic``, seeds ``seed``, ``seed + 1``...), written as LiDAR HD-named GeoTIFFs
    under build/cache on first use; the same entry always gives the same scenes."""
    from .data.synthetic import synthetic_scene, write_scene

    count, size, seed = int(entry.get("count", 16)), int(entry.get("size", 256)), int(entry.get("seed", 0))
    gsd = float(entry.get("gsd", 0.5))
    folder = PLUGIN_ROOT / "build" / "cache" / "synthetic_stacks" / f"n{count}_s{size}_g{gsd:g}_seed{seed}"
    done = folder / "complete"
    if not done.exists():
        for i in range(count):
            write_scene(folder, synthetic_scene(size, seed + i, gsd), f"synthetic_{seed + i:04d}", gsd,
                        origin=(500000.0 + i * size * gsd, 6600000.0))
        done.write_text("written\n")
    return folder


def point_cloud_stack(entry: Dict[str, Any], root: Path, cfg: Dict[str, Any]):
    """The stack of a ``"format": "point_cloud"`` folder entry: ``ortho`` (the optical layer) with
    labels, DSM and nDSM rasterised from ``point_cloud`` onto its grid (cached under build/)."""
    from ..engine.package import ClassInfo
    from .data.point_cloud_stacks import rasterised_stack

    ortho = _resolve(entry["ortho"], root)
    if is_held_out_optical(ortho.name):
        raise ValueError(f"'{ortho.name}' is the held-out optical area (models/data/holdout.py): it never trains")
    classes = [ClassInfo(c["value"], c["name"], c["color"]) for c in cfg["classes"]]
    return rasterised_stack(ortho, _resolve(entry["point_cloud"], root), classes,
                            PLUGIN_ROOT / "build" / "cache" / "point_cloud_stacks", modality=entry.get("modality", "rgb"))


def validation_protocol(cfg: Dict[str, Any]) -> str:
    """One sentence: what the checkpoint-selection figures were measured on."""
    data = cfg["data"]
    if "validation_protocol" in data:
        return str(data["validation_protocol"])
    return (f"validation = right {data.get('val_fraction', 0.2):.0%} strip of every tile "
            "(spatially separate from the training area), whole strips at native GSD (resampled into the "
            "package's GSD range where it lies outside, as segment runs it); mIoU over "
            f"ground, building, low vegetation, tree, leaving out those with < {MIN_SUPPORT} "
            "reference pixels in the group (listed per row in classes_in_miou)")


def held_out_areas(cfg: Dict[str, Any]) -> List[Area]:
    """The recipe's held-out chips (``data.held_out``: OMBRIA ``test/``), whole, for the final
    figures only; empty when the recipe names none (the urban recipes: ``models.held_out``)."""
    spec = cfg["data"].get("held_out")
    if not spec:
        return []
    from .data.ombria import find_ombria_chips
    root = _resolve(cfg["data"].get("root", str(SHARED_DATA)), PLUGIN_ROOT)
    chips = find_ombria_chips(_resolve(spec["path"], root), sorted({m["source"] for m in cfg["modalities"]}))
    return [Area(c, (0, 0, c.width, c.height)) for c in chips]


def held_out_metrics(results: Dict[str, Any], cfg: Dict[str, Any]) -> Dict[str, Any]:
    """``evaluate`` output of one group -> the package's ``metrics.held_out`` (percent, per class
    keyed by class value, reference pixels)."""
    values = [c["value"] for c in cfg["classes"]]
    keys = class_keys(cfg)
    subsets = {}
    for name, row in results["subsets"].items():
        subsets[name] = {"miou": round(100 * row["miou"], 2),
                         "per_class": {str(v): None if row["iou"][k] is None else round(100 * row["iou"][k], 2)
                                       for v, k in zip(values, keys)},
                         "pixels": int(sum(row["support"].values()))}
    return {"protocol": cfg["data"]["held_out"]["protocol"], "subsets": subsets,
            "average": round(100 * results["average"], 2), "top1": round(100 * results["top1"], 2),
            "last1": round(100 * results["last1"], 2)}


def build_net(cfg: Dict[str, Any]):
    """The config's network; ``derived-inputs`` wraps a registry network (models.derived)."""
    net_cfg = dict(cfg["network"])
    net_cfg["modalities"] = {m["name"]: m["bands"] for m in cfg["modalities"]}
    net_cfg["num_classes"] = len(cfg.get("classes", CLASS_NAMES))
    if cfg["architecture"] == "derived-inputs":
        from .derived import build_derived
        return build_derived(net_cfg)
    from .networks.registry import build_network
    return build_network(cfg["architecture"], net_cfg)


def torch_predictor(net) -> Callable[[Dict[str, np.ndarray], Sequence[float]], np.ndarray]:
    """Argmax class indices of one C x H x W input per modality (padded to size_multiple)."""
    import torch

    def run(feed: Dict[str, np.ndarray], present: Sequence[float]) -> np.ndarray:
        h, w = next(iter(feed.values())).shape[-2:]
        m = int(getattr(net, "size_multiple", 1))
        ph, pw = -h % m, -w % m
        xs = {k: torch.from_numpy(np.pad(v, ((0, 0), (0, ph), (0, pw))))[None] for k, v in feed.items()}
        net.eval()
        with torch.no_grad():
            logits = net(xs, torch.tensor([list(present)], dtype=torch.float32))["logits"]
        return logits[0, :, :h, :w].argmax(0).numpy()

    return run


def evaluate(predictor, areas: Sequence[Area], groups: Sequence[str], cfg: Dict[str, Any],
             subsets: str = "all") -> Dict[str, Any]:
    """Per validation group, per modality subset the area has: confusion-matrix scores.

    ``predictor(feed, present) -> H x W class indices`` (a torch net is wrapped with
    :func:`torch_predictor`); ``cfg`` gives ``modalities`` (name, bands, source, normalization),
    ``classes`` and ``foreground``. ``subsets='all'``: every non-empty subset of the modalities
    an area carries (SGMA table); ``'full'``: only all of them (cheap, for model selection).
    """
    if not callable(predictor) or hasattr(predictor, "state_dict"):
        predictor = torch_predictor(predictor)
    mods = [m["name"] for m in cfg["modalities"]]
    names = class_keys(cfg)
    bands = {m["name"]: m["bands"] for m in cfg["modalities"]}
    norms = {m["name"]: as_normalization(m["normalization"], m["bands"]) for m in cfg["modalities"]}
    values = [c["value"] for c in cfg.get("classes", [])] or list(range(1, 7))
    fg = cfg.get("foreground", [0, 1, 2, 3])
    lut = np.full(256, IGNORE, np.int64)
    for i, v in enumerate(values):
        lut[v] = i
    evaluators: Dict[str, SubsetEvaluator] = {}
    gsd = cfg.get("package", {}).get("gsd")
    gsd_range = GsdRange.of(gsd) if gsd else None
    for area, group in zip(areas, groups):
        x0, y0, x1, y1 = area.window
        label = lut[area.stack.read_label(x0, y0, x1 - x0, y1 - y0)]
        # the network sees the area on the grid segment would run it on (inside the package's range)
        scale = area.stack.gsd / gsd_range.nearest(area.stack.gsd) if gsd_range else 1.0
        grid = (max(1, round(label.shape[0] * scale)), max(1, round(label.shape[1] * scale)))
        raw = {}
        for m in cfg["modalities"]:
            if m["source"] in area.stack.files:
                d, ok = resample(*area.stack.read(m["source"], x0, y0, x1 - x0, y1 - y0), grid)
                spec = norms[m["name"]]  # an area is a whole layer: percentiles of its own
                raw[m["name"]] = normalize(d, ok, spec, own_statistics(d, ok, spec))
        have = [m for m in mods if m in raw]
        if not have:
            continue
        ev = evaluators.setdefault(group, SubsetEvaluator(mods, names, fg,
                                                          int(cfg.get("min_support", MIN_SUPPORT))))
        chosen = modality_subsets(have) if subsets == "all" else [tuple(have)]
        for subset in chosen:
            feed = {m: raw[m] if m in subset else np.zeros((bands[m],) + grid, np.float32) for m in mods}
            pred = resample_label(predictor(feed, [1.0 if m in subset else 0.0 for m in mods]), label.shape)
            ev.update(subset, label, pred, ignore_index=IGNORE)
    out = {}
    for group, ev in evaluators.items():
        res = ev.results()
        out[group] = {
            "subsets": {k: {"miou": _r(v["miou"]), "oa": _r(v["oa"]), "kappa": _r(v["kappa"]),
                            "iou": {c: _r(x) for c, x in v["iou"].items()},
                            "f1": {c: _r(x) for c, x in v["f1"].items()},
                            "support": v["support"], "classes_in_miou": v["foreground"]}
                      for k, v in res["subsets"].items()},
            "average": _r(res["miou_average"]), "top1": _r(res["miou_top1"]), "last1": _r(res["miou_last1"])}
    return out


def class_keys(cfg: Dict[str, Any]) -> List[str]:
    """Metric keys of the classes: the LiDAR scheme's short names for the urban recipes, the
    recipe's own class names (lower case, '_' for spaces) for any other class list."""
    classes = cfg.get("classes", [])
    if not classes or [c["value"] for c in classes] == list(range(1, len(CLASS_NAMES) + 1)):
        return CLASS_NAMES[:len(classes) or len(CLASS_NAMES)]
    return [c["name"].split(" /")[0].strip().lower().replace(" ", "_") for c in classes]


def _r(x: float) -> Optional[float]:
    return None if x is None or not math.isfinite(x) else round(float(x), 4)


def selection_score(results: Dict[str, Any]) -> float:
    """Model selection: mean over groups of the mean mIoU over their subsets."""
    vals = [g["average"] for g in results.values() if g["average"] is not None]
    return float(np.mean(vals)) if vals else 0.0


def train(cfg: Dict[str, Any], out: Optional[Path] = None, resume: bool = False,
          log: Optional[Callable[[str], None]] = None) -> Path:
    import torch

    from .networks._base import TrainingBatch
    from .nn.losses import LossSettings

    log = log or functools.partial(print, flush=True)
    tr = cfg["train"]
    torch.set_num_threads(int(tr.get("threads", 1)))
    seed = int(tr.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out = Path(out or _resolve(cfg["package"]["out"], PLUGIN_ROOT))
    # checkpoints stay out of the package folder (never shipped); default: beside it
    ckpt_dir = Path(tr["ckpt_dir"]) if tr.get("ckpt_dir") else out.with_name(out.name + ".ckpt")
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    train_areas, val_areas, weights, groups = build_areas(cfg)
    if not train_areas:
        raise ValueError(f"no training tile (a '<stem>_label.tif' with its layers) in the folders of "
                         f"{cfg.get('_config_path', 'the config')} under {cfg['data'].get('root', SHARED_DATA)}")
    mods = [m["name"] for m in cfg["modalities"]]
    data = cfg["data"]
    sampler = ChipSampler(
        train_areas, mods, {m["name"]: m["bands"] for m in cfg["modalities"]},
        {m["name"]: m["source"] for m in cfg["modalities"]},
        {m["name"]: m["normalization"] for m in cfg["modalities"]},
        [c["value"] for c in cfg.get("classes", [])] or list(range(1, 7)), chip=int(data.get("chip", 128)),
        gsd_range=tuple(data["gsd_range"]) if data.get("gsd_range") else None,
        drop_prob=float(data.get("drop_prob", 0.0)), area_weights=weights,
        height_scale=tuple(data["height_scale"]) if data.get("height_scale") else None,
        height_modalities=[m["name"] for m in cfg["modalities"] if m.get("kind") == "ndsm"],
        display_modalities=data.get("display_jitter", {}).get("modalities", ()),
        display_gamma=tuple(data.get("display_jitter", {}).get("gamma", (0.5, 2.0))),
        # {"share": 0.4, "window_m": 40}: that share of chips gets the nDSM over the DTM the engine's
        # ground filter estimates from the DSM (what a user with a DSM alone feeds)
        estimated_ground=(EstimatedGroundCache(float(data["estimated_ground"].get("window_m", DEFAULT_GROUND_WINDOW_M)))
                          if data.get("estimated_ground") else None),
        estimated_share=float((data.get("estimated_ground") or {}).get("share", 0.0)),
        strong_photometric=data.get("photometric") == "strong",
        false_colour_share=float(data.get("false_colour_share", 0.0)),
        upsample=bool(data.get("upsample", False)),
        # {"share": 0.3, "gsd": [1.0, 2.0]}: that share of the chips of data finer than 1 m is averaged down to a
        # pixel size drawn in 1-2 m and enlarged back (what segment does with a coarse layer)
        coarsen_share=float((data.get("coarsen") or {}).get("share", 0.0)),
        coarsen_gsd=tuple((data.get("coarsen") or {}).get("gsd", (1.0, 2.0))))
    net = build_net(cfg)
    params = sum(p.numel() for p in net.parameters())
    log(f"{cfg['architecture']}: {params / 1e6:.2f} M parameters; {len(train_areas)} training areas; "
        f"validation: {validation_protocol(cfg)}")
    log("training on: " + ", ".join(sorted({a.stack.name for a in train_areas})))
    opt = torch.optim.AdamW(net.parameters(), lr=float(tr.get("lr", 2e-3)),
                            weight_decay=float(tr.get("weight_decay", 1e-4)))
    steps, batch = int(tr["steps"]), int(tr.get("batch", 8))
    warmup = int(tr.get("warmup", steps // 20))
    # optional hard-pixel (OHEM-style) term next to the plain CE: {"keep": 0.25, "weight": 1.0}
    hp = tr.get("hard_pixel") or {}
    cw = tr.get("class_weights")
    settings = LossSettings(class_weights=torch.tensor(cw, dtype=torch.float32) if cw else None,
                            hard_pixel_keep=float(hp.get("keep", 0.25)), hard_pixel_weight=float(hp.get("weight", 0.0)),
                            terms=dict(tr.get("loss_terms", {})))
    net.terms(settings)  # a misspelt loss term fails now, not after the first batch
    # optional exponential moving average of the weights (and BN statistics): validated,
    # selected and exported instead of the raw weights; train.ema = decay (e.g. 0.998)
    ema_decay = float(tr.get("ema", 0.0) or 0.0)
    ema_net = copy.deepcopy(net) if ema_decay > 0 else None
    step, best, best_state, elapsed0, history = 0, -1.0, None, 0.0, []
    last = ckpt_dir / "last.pt"
    if resume and last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        net.load_state_dict(ck["net"])
        opt.load_state_dict(ck["opt"])
        step, best, elapsed0, history = ck["step"], ck["best"], ck["elapsed"], ck["history"]
        best_state = ck.get("best_state")
        if ema_net is not None:
            ema_net.load_state_dict(ck["ema"])
        rng.bit_generator.state = ck["rng"]
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed at step {step} (best {best:.4f})")

    def save_ckpt() -> None:
        tmp = last.with_suffix(".tmp")
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                    "best_state": best_state, "ema": None if ema_net is None else ema_net.state_dict(),
                    "elapsed": elapsed0 + time.time() - t0, "history": history,
                    "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(last)

    selection_subsets = tr.get("selection_subsets", "full")
    if selection_subsets not in ("full", "all"):
        raise ValueError(f"train.selection_subsets must be 'full' or 'all', not {selection_subsets!r}")
    t0 = time.time()
    max_s = float(tr.get("max_minutes", 1e9)) * 60
    loss_avg = None
    stop_at = min(steps, int(tr.get("stop_after", steps)))  # stop_after: pause early (resume later)
    while step < stop_at and elapsed0 + time.time() - t0 < max_s:
        set_learning_rate(opt, lr_at(step, steps, float(tr.get("lr", 2e-3)), warmup))
        b = sampler.batch(batch, rng)
        net.train()
        loss, terms = net.training_loss(TrainingBatch({m: torch.from_numpy(b[m]) for m in mods},
                                                      torch.from_numpy(b["present"]),
                                                      torch.from_numpy(b["label"]).long()), settings)
        apply_gradients(loss, opt, net.parameters())
        step += 1
        if ema_net is not None:
            d = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, v in zip(ema_net.state_dict().values(), net.state_dict().values()):
                    if e.dtype.is_floating_point:
                        e.mul_(d).add_(v.detach(), alpha=1 - d)
                    else:
                        e.copy_(v)
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        el = elapsed0 + time.time() - t0
        if step % int(tr.get("log_every", 20)) == 0:
            eta = el / max(1, step) * (steps - step)
            parts = " ".join(f"{k} {v:.3f}" for k, v in terms.items()) if len(terms) > 1 else ""
            log(f"step {step}/{steps} loss {loss_avg:.3f} " + (f"({parts}) " if parts else "")
                + f"lr {opt.param_groups[0]['lr']:.2e} {el / 60:.1f} min, eta {eta / 60:.1f} min")
        if step % int(tr.get("val_every", 200)) == 0 or step == steps:
            # train.selection_subsets "all": choose on the mean over every modality subset (the paths a
            # user with one layer gets), not only on all modalities together (cheaper, the default)
            res = evaluate(ema_net if ema_net is not None else net, val_areas, groups, cfg,
                           subsets=selection_subsets)
            score = selection_score(res)
            history.append({"step": step, "loss": round(loss_avg, 4), "val": round(score, 4)})
            summary = ", ".join(f"{g}: " + " / ".join(f"{k} {v['miou']}" for k, v in r["subsets"].items())
                                for g, r in res.items())
            log(f"  val step {step}: score {score:.4f} ({summary})")
            if score > best:
                best, best_state = score, copy.deepcopy((ema_net if ema_net is not None else net).state_dict())
        if step % int(tr.get("ckpt_every", 100)) == 0:
            save_ckpt()
    save_ckpt()
    train_s = elapsed0 + time.time() - t0
    # train.selection "last": export the final (averaged) weights, not the best-scoring checkpoint
    # (a recipe whose validation strips are too small to choose on)
    if best_state is not None and tr.get("selection", "best") == "best":
        net.load_state_dict(best_state)
    elif ema_net is not None:
        net.load_state_dict(ema_net.state_dict())
    log(f"training done: {step} steps in {train_s / 60:.1f} min; best validation score {best:.4f}")
    return export_trained(net, cfg, out, val_areas, groups, train_s, step, history, log)


def export_trained(net, cfg: Dict[str, Any], out: Path, val_areas, groups, train_s: float, step: int,
                   history: List[Dict[str, Any]], log: Callable[[str], None]) -> Path:
    from .export import base_metadata, export_package

    res = evaluate(net, val_areas, groups, cfg, subsets="all")
    for g, r in res.items():
        for k, v in r["subsets"].items():
            log(f"  {g:>12} {k:<14} mIoU(g,b,lv,t) {v['miou']}  IoU {v['iou']}")
        log(f"  {g:>12} Average {r['average']} Top-1 {r['top1']} Last-1 {r['last1']}")
    pk = cfg["package"]
    metrics = {
        "protocol": validation_protocol(cfg),
        "validation": res, "train_seconds": round(train_s, 1), "steps": step,
        "threads": int(cfg["train"].get("threads", 1)), "seed": int(cfg["train"].get("seed", 0)),
        "history": history[-20:],
    }
    held = held_out_areas(cfg)
    if held:
        res_held = evaluate(net, held, ["held_out"] * len(held), cfg, subsets="all")["held_out"]
        metrics["held_out"] = held_out_metrics(res_held, cfg)
        for k, v in metrics["held_out"]["subsets"].items():
            log(f"  held out {k:<14} mIoU {v['miou']} per class {v['per_class']} ({v['pixels']} px)")
    mods = [{k: v for k, v in m.items() if k != "source"} for m in cfg["modalities"]]
    arch = cfg["architecture"]
    if arch == "derived-inputs":  # say what the user gets; extra.torch keeps the builder name
        arch = f"{cfg['network'].get('inner_architecture', 'network')} (+ in-graph elevation features)"
    meta = base_metadata(
        cfg["name"], mods, version=cfg.get("version", "1.0.0"), architecture=arch,
        description=pk.get("description", ""), training_data=pk.get("training_data", ""),
        tile_size=int(pk.get("tile_size", 256)), size_multiple=int(getattr(net, "size_multiple", 1)),
        overlap=int(pk.get("overlap", 32)), gsd=pk.get("gsd"), classes=cfg.get("classes"), metrics=metrics,
        extra={"training_config": {k: v for k, v in cfg.items() if not k.startswith("_")}})
    if "license" in pk:
        meta["license"] = pk["license"]
    if "attribution" in pk:
        meta["attribution"] = pk["attribution"]
    path = export_package(net, meta, out, architecture=cfg["architecture"], config=net.config,
                          file_name=cfg["name"], weight_storage=pk.get("weight_storage", "float32"))
    from .card import write_card
    write_card(path.parent, json.loads(path.with_suffix(".json").read_text(encoding="utf-8")),
               pk.get("failure_modes", []))
    log(f"wrote {path} ({sum(p.stat().st_size for p in path.parent.iterdir()) / 1e6:.1f} MB)")
    return path


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description="Train a ModalSeg network and export a model package.")
    ap.add_argument("--config", required=True, help="training config JSON (see training/)")
    ap.add_argument("--out", help="package folder (default: the config's package.out)")
    ap.add_argument("--resume", action="store_true", help="continue from <ckpt-dir>/last.pt")
    ap.add_argument("--ckpt-dir", help="checkpoint folder (default: <out>.ckpt beside the package)")
    ap.add_argument("--steps", type=int, help="override train.steps")
    ap.add_argument("--threads", type=int, help="override train.threads (CPU threads)")
    ap.add_argument("--seed", type=int, help="override train.seed")
    ap.add_argument("--max-minutes", type=float, help="stop (and export) after this much training time")
    ap.add_argument("--export-only", action="store_true",
                    help="skip training: export the checkpoint's best weights")
    a = ap.parse_args(argv)
    cfg = load_config(a.config)
    for key, val in (("ckpt_dir", a.ckpt_dir), ("steps", a.steps), ("threads", a.threads), ("seed", a.seed), ("max_minutes", a.max_minutes)):
        if val is not None:
            cfg["train"][key] = val
    if a.export_only:
        cfg["train"]["max_minutes"] = 0
    train(cfg, Path(a.out) if a.out else None, resume=a.resume or a.export_only)


if __name__ == "__main__":
    main()
