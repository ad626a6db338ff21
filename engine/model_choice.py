"""Which model package suits the given layers, and how a package presents itself in a list.

The automatic choice takes the package that uses the most of the analyst's layers (a layer is
used when the package has an input of its role; a DTM when it turns the given DSM into the nDSM
the package takes). Ties go to the package with the best held-out mIoU for the layers in use,
among those with the default package's classes (mIoU over other classes compares nothing) whose
figures are not marked optimistic (measured on tiles they trained on), and otherwise to the
default package. Packages that require a layer that was not given cannot be
chosen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from .binding import ROLE_LABELS, ROLES, LayerInput, role_of_kind, with_false_colour_nir
from .errors import EngineError
from .package import ModalitySpec, PackageMetadata

_KIND_LABELS = {"optical": "optical", "nir": "NIR", "sar": "SAR", "dsm": "DSM", "ndsm": "nDSM", "dtm": "DTM"}
_RGB = ("red", "green", "blue")


@dataclass(frozen=True)
class Choice:
    index: int  # into the candidates
    reason: str  # for the log


def accepted_roles(meta: PackageMetadata) -> List[str]:
    """The layer roles ``meta`` reads, in ``ROLES`` order; a DTM counts for packages taking an nDSM
    (DSM - DTM)."""
    roles = {role_of_kind(spec.kind) for spec in meta.modalities}
    if any(spec.kind == "ndsm" for spec in meta.modalities):
        roles.add("dtm")
    return [role for role in ROLES if role in roles]


def used_roles(meta: PackageMetadata, given: Sequence[str]) -> List[str]:
    """The given roles ``meta`` would use (a DTM only with an elevation layer beside it)."""
    accepted = accepted_roles(meta)
    return [role for role in given if role in accepted and (role != "dtm" or "elevation" in given)]


def _missing_required(meta: PackageMetadata, given: Sequence[str]) -> List[str]:
    return [role_of_kind(spec.kind) for spec in meta.modalities
            if spec.required and role_of_kind(spec.kind) not in given]


def packages_using(role: str, candidates: Sequence[PackageMetadata]) -> List[str]:
    """Names of the candidates with an input for ``role``."""
    return [meta.name for meta in candidates if role in accepted_roles(meta)]


def _given_roles(layers: Mapping[str, LayerInput]) -> List[str]:
    """The roles given (a false-colour optical layer gives NIR too)."""
    given = with_false_colour_nir(layers)
    return [role for role in ROLES if role in given]


def _role_list(roles: Sequence[str]) -> str:
    return ", ".join(ROLE_LABELS[role] for role in roles)


def choose_package(candidates: Sequence[PackageMetadata], layers: Mapping[str, LayerInput],
                   default: str) -> Choice:
    """The candidate that uses the most of ``layers`` (ties: the one named ``default``, else the first)."""
    given = _given_roles(layers)
    if not candidates:
        raise EngineError("no model package is available to choose from; give a model file")
    scores: Dict[int, int] = {}
    for index, meta in enumerate(candidates):
        if not _missing_required(meta, given):
            scores[index] = len(used_roles(meta, given))
    best = max(scores.values(), default=0)
    if best == 0 or all(role == "dtm" for role in given):
        takes = sorted({role for meta in candidates for role in accepted_roles(meta) if role != "dtm"},
                       key=ROLES.index)
        labels = [ROLE_LABELS[role] for role in takes]
        takes_text = ", ".join(labels[:-1]) + " and " + labels[-1] if len(labels) > 1 else labels[0]
        raise EngineError(f"none of the bundled models uses the given layers ({_role_list(given)}); they take "
                          f"{takes_text} layers: give one of those, or a model file that takes yours")
    tied = [index for index, score in scores.items() if score == best]
    index = next((i for i in tied if candidates[i].name == default), tied[0])
    scored = _held_out_ranking(candidates, tied, given, candidates[index])
    if scored:
        index = scored[0][0]
    meta = candidates[index]
    used = used_roles(meta, given)
    reason = (f"model (automatic): {meta.name} {meta.version}, which uses {len(used)} of the {len(given)} given "
              f"layer(s) ({_role_list(used)})")
    if scored:
        others = ", ".join(f"{candidates[i].name} {miou:.1f}" for i, miou in scored[1:])
        reason += (f"; {len(tied) - 1} other bundled model(s) use as many, and it has the best held-out mIoU "
                   f"for these layers: {scored[0][1]:.1f} ({others})")
    elif len(tied) > 1:
        reason += f"; {len(tied) - 1} other bundled model(s) use as many, and ties go to the default"
    else:
        reason += "; no other bundled model uses as many"
    # e.g. a SAR layer: say that this is the one package reading it, the reason a user looks for
    only_here = [role for role in used if packages_using(role, candidates) == [meta.name]]
    if only_here:
        reason += f"; it is the only bundled model that takes the {_role_list(only_here)} layer"
    return Choice(index, reason)


def held_out_miou(meta: PackageMetadata, roles: Sequence[str]) -> Optional[float]:
    """The package's held-out mIoU (percent) for the input subset that ``roles`` feed, if measured on
    areas it never trained on (figures stored as ``optimistic`` compare nothing)."""
    subset = "+".join(spec.name for spec in meta.modalities if role_of_kind(spec.kind) in roles)
    held_out = meta.metrics.get("held_out")
    if not isinstance(held_out, dict) or held_out.get("optimistic", False):
        return None
    row = held_out.get("subsets", {}).get(subset)
    miou = row.get("miou") if isinstance(row, dict) else None
    return float(miou) if isinstance(miou, (int, float)) else None


def _held_out_ranking(candidates: Sequence[PackageMetadata], tied: Sequence[int], given: Sequence[str],
                      reference: PackageMetadata) -> List[Tuple[int, float]]:
    """(index, held-out mIoU) of the tied candidates with ``reference``'s classes, best first (the
    reference first among equals); empty unless at least two of them have figures to compare."""
    scored = [(i, held_out_miou(candidates[i], used_roles(candidates[i], given))) for i in tied
              if candidates[i].classes == reference.classes]
    ranked = sorted(((i, miou) for i, miou in scored if miou is not None),
                    key=lambda item: (-item[1], candidates[item[0]] is not reference))
    return ranked if len(ranked) > 1 else []


def _modality_label(spec: ModalitySpec) -> str:
    label = _KIND_LABELS[spec.kind]
    if spec.kind == "optical":
        label += " RGB" if tuple(spec.band_names) == _RGB else f" ({spec.bands} bands)"
    return label


def inputs_label(meta: PackageMetadata) -> str:
    """What a package takes, in words: 'optical RGB and/or nDSM', 'needs SAR; optional optical RGB'."""
    required = [_modality_label(spec) for spec in meta.modalities if spec.required]
    optional = [_modality_label(spec) for spec in meta.modalities if not spec.required]
    if not required:
        return " and/or ".join(optional)
    text = "needs " + " + ".join(required)
    return text + (f"; optional {', '.join(optional)}" if optional else "")


def _subset_label(subset: str, meta: PackageMetadata) -> str:
    kinds = {spec.name: _KIND_LABELS[spec.kind] for spec in meta.modalities}
    return "+".join(kinds.get(name, name) for name in subset.split("+"))


def _scored_subsets(subsets: object, scale: float) -> List[Tuple[str, float]]:
    """(subset, mIoU in percent) of a metrics table, the fullest input set first."""
    scored = [(name, scale * row["miou"]) for name, row in (subsets.items() if isinstance(subsets, dict) else ())
              if isinstance(row, dict) and isinstance(row.get("miou"), (int, float))]
    return sorted(scored, key=lambda item: (-len(item[0].split("+")), -item[1]))


def accuracy_label(meta: PackageMetadata) -> str:
    """Held-out mIoU per input subset (whole areas never trained on: what ``segment`` logs), e.g.
    'held-out mIoU: optical+nDSM 84.0, nDSM 54.2, optical 29.1'; a package without held-out figures
    shows its validation figures (``validation_label``) instead."""
    held_out = meta.metrics.get("held_out")
    scored = _scored_subsets(held_out.get("subsets") if isinstance(held_out, dict) else None, 1.0)
    if scored:
        return "held-out mIoU: " + ", ".join(f"{_subset_label(name, meta)} {miou:.1f}" for name, miou in scored)
    return validation_label(meta)


def validation_label(meta: PackageMetadata) -> str:
    """Validation mIoU per evaluation group and input subset, e.g. 'validation mIoU RGB tiles:
    optical+nDSM 99.6, nDSM 99.4; towns: nDSM 74.2' (strips next to training pixels: optimistic)."""
    validation = meta.metrics.get("validation")
    groups = []
    for group, figures in (validation.items() if isinstance(validation, dict) else ()):
        scored = _scored_subsets(figures.get("subsets") if isinstance(figures, dict) else None, 100.0)
        if scored:
            groups.append(f"{group.replace('_', ' ').replace('rgb', 'RGB')}: " + ", ".join(
                f"{_subset_label(name, meta)} {miou:.1f}" for name, miou in scored))
    return "validation mIoU " + "; ".join(groups) if groups else "no accuracy figures"


def describe_package(meta: PackageMetadata) -> str:
    """One line for a model list: name, version, inputs and measured accuracy per input subset."""
    return f"{meta.name} {meta.version}: {inputs_label(meta)}; {accuracy_label(meta)}"
