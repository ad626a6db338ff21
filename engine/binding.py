"""Bind the analyst's layers to the modalities a model package expects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from osgeo import gdal

from .errors import WARNING_PREFIX, EngineError
from .false_colour import IRC_BAND_NAMES, NIR_POSITION, RED_GREEN_POSITIONS, check_true_colour, irc_bands
from .grid import grid_of, open_raster
from .ground import elevation_kind_from_values
from .package import ModalitySpec, PackageMetadata
from .reader import BandReader
from .sar import is_complex, scale_of
from .vocabulary import ELEVATION_TYPES, OPTICAL_TYPES, SAR_SCALES, check_key

# Roles are what the analyst provides; kinds are what a network consumes.
ROLES = ("optical", "elevation", "dtm", "sar", "nir")
ROLE_LABELS = {"optical": "optical", "elevation": "elevation", "dtm": "DTM", "sar": "SAR", "nir": "NIR"}
_ROLE_OF_KIND = {"optical": "optical", "nir": "nir", "sar": "sar", "dsm": "elevation", "ndsm": "elevation",
                 "dtm": "dtm"}


def role_of_kind(kind: str) -> str:
    """The layer role that feeds a modality kind (a DSM or nDSM comes from the elevation layer)."""
    return _ROLE_OF_KIND[kind]


def parse_band_list(value: object, what: str) -> Optional[Tuple[int, ...]]:
    """Band numbers as users give them: ``4,3,2``, ``4;3;2``, ``4 3 2``, a number, or a list of
    numbers / numeric strings; ``None`` when empty. Anything else is an error, never ignored."""
    if value is None or value == "" or value == []:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    parts: List[str] = []
    for item in items:
        parts += str(item).replace(";", ",").replace(" ", ",").split(",")
    parts = [part.strip() for part in parts if part.strip()]
    try:
        bands = tuple(int(part) for part in parts)
    except ValueError:
        bands = ()
    if not bands or any(band < 1 for band in bands):
        raise EngineError(f"{what} '{value}' is not a band list; give band numbers from 1, e.g. 4,3,2")
    return bands


@dataclass(frozen=True)
class LayerInput:
    path: str
    bands: Optional[Tuple[int, ...]] = None  # 1-based; None = the first bands the model needs
    elevation_type: str = "auto"  # for the elevation role: is the layer a DSM or an nDSM?
    sar_scale: str = "auto"  # for the SAR role: dB or linear power (vocabulary.SAR_SCALES)
    optical_type: str = "rgb"  # for the optical role: true colour or false-colour infrared (vocabulary.OPTICAL_TYPES)


@dataclass(frozen=True)
class Source:
    """One network input read from a raster (minus an optional DTM, which makes a DSM an nDSM)."""

    modality: str
    path: str
    bands: Tuple[int, ...]
    resampling: str = "bilinear"
    subtract_path: Optional[str] = None
    subtract_band: int = 1
    is_reference_candidate: bool = False  # optical layers define the default output grid
    is_elevation: bool = False  # heights in metres: implausible values become nodata
    # A DSM without a DTM: the run estimates the DTM (engine.ground) and sets ``subtract_path`` to it.
    estimate_ground: bool = False
    power_to_db: bool = False  # SAR in linear power (or complex: its intensity): read as dB (engine.sar)
    # A false-colour infrared layer: ``bands`` are its red and green, blue is estimated (engine.false_colour).
    estimate_blue: bool = False

    def describe(self) -> str:
        bands = ",".join(str(b) for b in self.bands)
        if self.estimate_blue:
            return (f"{self.modality} ← {self.path} (false-colour infrared: bands {bands} as red, green; blue "
                    "estimated as a copy of green)")
        text = f"{self.modality} ← {self.path} (band{'s' if len(self.bands) > 1 else ''} {bands})"
        if self.estimate_ground and not self.subtract_path:
            text += " minus a DTM estimated from it (ground filter) = nDSM"
        elif self.subtract_path:
            text += f" minus DTM {self.subtract_path} (band {self.subtract_band}) = nDSM"
        if self.power_to_db:
            text += ", linear power converted to dB"
        return text


def _band_count(path: str) -> int:
    return open_raster(path).RasterCount


def _choose_bands(spec: ModalitySpec, role: str, layer: LayerInput) -> Tuple[int, ...]:
    count = _band_count(layer.path)
    wanted = ", ".join(spec.band_names)
    if layer.bands:
        bands = tuple(int(b) for b in layer.bands)
        if len(bands) != spec.bands:
            raise EngineError(f"the {role} layer '{layer.path}' was given {len(bands)} band(s) "
                              f"({','.join(map(str, bands))}) but the model needs {spec.bands} ({wanted})")
        bad = [b for b in bands if not 1 <= b <= count]
        if bad:
            raise EngineError(f"the {role} layer '{layer.path}' has {count} band(s); band(s) "
                              f"{', '.join(map(str, bad))} do not exist")
        return bands
    if count < spec.bands:
        raise EngineError(f"the {role} layer '{layer.path}' has {count} band(s) but the model needs "
                          f"{spec.bands} ({wanted}){_palette_hint(layer.path, count)}")
    return tuple(range(1, spec.bands + 1))


def _palette_hint(path: str, count: int) -> str:
    """How to turn a colour-indexed image (one band of palette entries) into the bands it shows."""
    ds = open_raster(path)  # held while its band is read: a band outliving its dataset crashes GDAL
    if count != 1 or ds.GetRasterBand(1).GetColorInterpretation() != gdal.GCI_PaletteIndex:
        return ""
    return ("; it is a colour-indexed (palette) image: expand its colours into red, green and blue bands first "
            "(Raster ▸ Conversion ▸ PCT to RGB in QGIS, or gdal_translate -expand rgb)")


def _elevation_source(spec: ModalitySpec, layer: LayerInput, dtm: Optional[LayerInput],
                      bands: Tuple[int, ...]) -> Tuple[Source, List[str]]:
    """The elevation layer as the model's elevation input, and what the log should say about it."""
    kind = layer.elevation_type
    check_key(ELEVATION_TYPES, kind, "elevation type")
    messages: List[str] = []
    if kind == "auto":
        if dtm is not None:
            kind = "dsm"
            messages.append(f"elevation type (auto): '{layer.path}' is taken as a DSM because a DTM is given")
        else:
            kind, reason = elevation_kind_from_values(layer.path, bands[0])
            taken_as = "a DSM" if kind == "dsm" else "an nDSM"
            messages.append(f"elevation type (auto): '{layer.path}' is taken as {taken_as} because {reason}")
    if spec.kind == "ndsm" and kind == "dsm":
        if dtm is None:
            return Source(spec.name, layer.path, bands, spec.resampling, is_elevation=True,
                          estimate_ground=True), messages
        dtm_band = dtm.bands[0] if dtm.bands else 1
        return Source(spec.name, layer.path, bands, spec.resampling, subtract_path=dtm.path, subtract_band=dtm_band,
                      is_elevation=True), messages
    if spec.kind == "dsm" and kind == "ndsm":
        raise EngineError("the model needs a DSM (absolute surface heights) but the elevation layer is an nDSM")
    return Source(spec.name, layer.path, bands, spec.resampling, is_elevation=True), messages


def sar_scale_from_values(path: str, band: int = 1, max_size: int = 512) -> Tuple[str, str]:
    """``("linear" | "db", why)`` for a SAR layer, from a decimated read of all of it (engine.sar)."""
    reader = BandReader(path, (band,), grid_of(path).decimated(max_size), "nearest")
    try:
        data, valid = reader.read(0, 0, reader.grid.width, reader.grid.height)
    finally:
        reader.close()
    return scale_of(data[0][valid])


def _sar_source(spec: ModalitySpec, layer: LayerInput, bands: Tuple[int, ...]) -> Tuple[Source, List[str]]:
    """The SAR layer as the model's SAR input (SAR modalities take dB), and what the log says."""
    scale = check_key(SAR_SCALES, layer.sar_scale, "SAR values")
    messages: List[str] = []
    if is_complex(layer.path):
        messages.append(WARNING_PREFIX + f"the SAR layer '{layer.path}' holds complex samples: their intensity "
                        "|z|² is used, converted to dB (phase is dropped)")
        scale = "linear"
    elif scale == "auto":
        scale, reason = sar_scale_from_values(layer.path, bands[0])
        taken_as = "linear power, converted to dB" if scale == "linear" else "dB, used as it is"
        messages.append(f"SAR values (auto): '{layer.path}' is taken as {taken_as}, because {reason}")
    elif scale == "linear":
        messages.append(f"SAR values: '{layer.path}' is linear power (as declared), converted to dB")
    return Source(spec.name, layer.path, bands, spec.resampling, power_to_db=scale == "linear"), messages


def _false_colour_source(spec: ModalitySpec, meta: PackageMetadata, layer: LayerInput) -> Tuple[Source, List[str]]:
    """A false-colour infrared layer as a true-colour input: its red and green, blue estimated."""
    check_true_colour(spec.band_names, meta.name, layer.path)
    count = _band_count(layer.path)
    bands = irc_bands(layer.path, count, layer.bands)
    red, green = (bands[i] for i in RED_GREEN_POSITIONS)
    messages = [WARNING_PREFIX + f"the optical layer '{layer.path}' is false-colour infrared (bands "
                f"{','.join(map(str, bands))} as {', '.join(IRC_BAND_NAMES)}): its red and green feed the model's red "
                "and green, and blue, which it does not have, is estimated as a copy of green; give a true-colour "
                "image for the model's full optical accuracy"]
    if not layer.bands and count > len(bands):
        messages.append(WARNING_PREFIX + f"bands {len(bands) + 1}-{count} of the optical layer '{layer.path}' are "
                        "not used (a false-colour infrared layer is read from its bands 1-3; choose others in the "
                        "band selection)")
    return Source(spec.name, layer.path, (red, green), spec.resampling, is_reference_candidate=True,
                  estimate_blue=True), messages


def with_false_colour_nir(layers: Mapping[str, LayerInput]) -> Dict[str, LayerInput]:
    """The layers, plus the NIR band of a false-colour infrared optical layer as the NIR layer when no
    NIR layer is given separately."""
    given = {role: layer for role, layer in layers.items() if layer is not None and layer.path}
    optical = given.get("optical")
    if optical is not None and check_key(OPTICAL_TYPES, optical.optical_type, "optical type") == "irc" \
            and "nir" not in given:
        bands = irc_bands(optical.path, _band_count(optical.path), optical.bands)
        given["nir"] = LayerInput(optical.path, (bands[NIR_POSITION],))
    return given


def _who_else(candidates: Sequence[PackageMetadata], meta: PackageMetadata, takes) -> str:
    """The end of an unused-layer warning: the bundled packages that would use it, or that none does."""
    others = [m.name for m in candidates if m.name != meta.name and takes(m)]
    if others:
        return f"model {', '.join(repr(name) for name in others)} would use it"
    return "no bundled model uses it"


def _unused_bands_warning(meta: PackageMetadata, spec: ModalitySpec, role: str, layer: LayerInput,
                          candidates: Sequence[PackageMetadata]) -> Optional[str]:
    count = _band_count(layer.path)
    if layer.bands or count <= spec.bands:
        return None  # the analyst chose the bands, or all are used
    unused, verb = (f"band {count}", "is") if count == spec.bands + 1 else (f"bands {spec.bands + 1}-{count}", "are")
    who = _who_else(candidates, meta, lambda m: any(
        _ROLE_OF_KIND[s.kind] == role and s.bands > spec.bands for s in m.modalities))
    return (WARNING_PREFIX + f"{unused} of the {ROLE_LABELS[role]} layer '{layer.path}' {verb} not used: "
            f"model '{meta.name}' reads bands 1-{spec.bands} as {', '.join(spec.band_names)} (choose others in "
            f"the band selection); {who}")


def _unused_layer_warning(meta: PackageMetadata, role: str, layer: LayerInput, given: Mapping[str, LayerInput],
                          candidates: Sequence[PackageMetadata]) -> str:
    label = ROLE_LABELS[role]
    optical = given.get("optical")
    if role == "nir" and optical is not None and optical.optical_type == "irc" and layer.path == optical.path:
        who = _who_else(candidates, meta, lambda m: any(_ROLE_OF_KIND[s.kind] == role for s in m.modalities))
        return (WARNING_PREFIX + f"band {layer.bands[0]} (near-infrared) of the false-colour optical layer "
                f"'{layer.path}' is not used: model '{meta.name}' takes no NIR input; {who}")
    if role == "dtm":
        if "elevation" not in given:
            cause = "a DTM only turns a DSM into heights above ground, and no DSM (elevation layer) was given"
        elif any(_ROLE_OF_KIND[s.kind] == "elevation" for s in meta.modalities):
            cause = "the elevation layer is taken as an nDSM (heights above ground) as it is"
        else:
            cause = f"model '{meta.name}' takes no elevation input"
        return WARNING_PREFIX + f"the DTM '{layer.path}' is not used: {cause}"
    who = _who_else(candidates, meta, lambda m: any(_ROLE_OF_KIND[s.kind] == role for s in m.modalities))
    return (WARNING_PREFIX + f"the {label} layer '{layer.path}' is not used: model '{meta.name}' takes no {label} "
            f"input; {who}")


def _source_for(spec: ModalitySpec, meta: PackageMetadata, role: str, layer: LayerInput,
                given: Mapping[str, LayerInput], candidates: Sequence[PackageMetadata]) -> Tuple[Source, List[str]]:
    """The source a given layer makes for one modality, and what the log should say about it."""
    if role == "optical" and layer.optical_type == "irc":
        return _false_colour_source(spec, meta, layer)
    bands = _choose_bands(spec, role, layer)
    unused_bands = _unused_bands_warning(meta, spec, role, layer, candidates)
    messages = [unused_bands] if unused_bands else []
    if role == "elevation":
        source, more = _elevation_source(spec, layer, given.get("dtm"), bands)
    elif role == "sar":
        source, more = _sar_source(spec, layer, bands)
    else:
        source, more = Source(spec.name, layer.path, bands, spec.resampling,
                              is_reference_candidate=(role == "optical")), []
    return source, messages + more


def bind_modalities(meta: PackageMetadata, layers: Mapping[str, LayerInput],
                    candidates: Sequence[PackageMetadata] = ()) -> Tuple[List[Source], List[str]]:
    """Match layers (by role) to the model's modalities; returns the sources and log lines.

    Layers (or bands) the model does not use are named in warnings (lines starting 'Warning: '),
    with the packages among ``candidates`` (the bundled ones) that would use them."""
    unknown = [r for r in layers if r not in ROLES]
    if unknown:
        raise EngineError(f"unknown input role(s) {unknown}; expected {', '.join(ROLES)}")
    given = with_false_colour_nir(layers)
    if not any(r != "dtm" for r in given):
        raise EngineError("give at least one input layer (optical, elevation, SAR or NIR)")
    sources: List[Source] = []
    messages: List[str] = []
    used_roles = set()
    for spec in meta.modalities:
        role = _ROLE_OF_KIND[spec.kind]
        layer = given.get(role)
        if layer is None:
            if spec.required:
                article = "an" if role[0] in "aeiou" else "a"
                raise EngineError(f"model '{meta.name}' requires {article} {role} layer ({spec.kind}, "
                                  f"{spec.bands} band(s): {', '.join(spec.band_names)})")
            messages.append(f"{spec.name}: no {role} layer given; the model runs without it")
            continue
        source, source_messages = _source_for(spec, meta, role, layer, given, candidates)
        messages += source_messages
        if source.subtract_path:
            used_roles.add("dtm")
        used_roles.add(role)
        sources.append(source)
        messages.append(f"bound {source.describe()}")
    if not sources:
        raise EngineError(f"model '{meta.name}' uses none of the given layers; it accepts "
                          f"{', '.join(sorted({_ROLE_OF_KIND[m.kind] for m in meta.modalities}))}")
    for role in [r for r in ROLES if r in given and r not in used_roles]:
        messages.append(_unused_layer_warning(meta, role, given[role], given, candidates))
    return sources, messages


def reference_order(sources: Sequence[Source]) -> List[str]:
    """Paths with the one defining the default grid first: the first optical layer, else the first layer."""
    ordered = sorted(sources, key=lambda s: not s.is_reference_candidate)
    paths = [s.path for s in ordered]
    paths += [s.subtract_path for s in sources if s.subtract_path]
    return paths
