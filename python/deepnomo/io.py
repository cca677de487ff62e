"""Case manifests and image readers.

A case manifest is a CSV with one row per (patient, modality, reader):

``patient_id, modality, image, mask, reader``

``image`` and ``mask`` are paths relative to the CSV's folder (absolute paths are
kept). An image is a NIfTI (``.nii``, ``.nii.gz``), NRRD, MetaImage (``.mha``,
``.mhd``) file, a folder holding one DICOM series, or an H&E tile (PNG/TIFF).
``reader`` names who drew the mask (e.g. ``r1``, ``r2``); an empty value means a
single reader.

:func:`check_manifest` returns, per patient, the reasons it cannot be processed
(duplicate rows, missing modality, missing files) so that a cohort run records
those patients as failed and goes on with the others.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

MANIFEST_COLUMNS = ("patient_id", "modality", "image", "mask", "reader")
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
TILE_SUFFIXES = (".png", ".tif", ".tiff")
DEFAULT_READER = "r1"

_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 32: 8, 64: 8, 128: 3, 256: 1, 512: 2, 768: 4,
                1024: 8, 1280: 8, 1536: 16, 1792: 16, 2048: 32, 2304: 4}
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


class ManifestError(ValueError):
    """A case manifest that cannot be used at all (missing columns, unreadable CSV)."""


class ImageReadError(ValueError):
    """An image or mask file that is missing, unreadable or truncated."""


@dataclass(frozen=True)
class Series:
    """One image of a case: a modality with its mask."""

    modality: str
    image: Path
    mask: Path | None


@dataclass(frozen=True)
class Case:
    """Everything one patient contributes under one reader's masks.

    Attributes
    ----------
    patient_id : str
    reader : str
    series : tuple of Series
        One per modality, in manifest order.
    """

    patient_id: str
    reader: str
    series: tuple[Series, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        """File-system-safe identifier of the case, unique within a manifest."""
        return safe_key(f"{self.patient_id}__{self.reader}")


def safe_key(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text))


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a case manifest and resolve its paths against the CSV's folder.

    Parameters
    ----------
    path : path of the CSV.

    Returns
    -------
    pandas.DataFrame
        Columns ``patient_id, modality, image, mask, reader, row`` (``row``: 1-based
        data row in the CSV); ``image``/``mask`` are absolute path strings (mask may be
        empty); ``reader`` defaults to ``r1``.

    Raises
    ------
    ManifestError
        When the file cannot be read, a required column is missing, or a row has no
        ``patient_id``, ``modality`` or ``image``.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(f"case manifest {path}: cannot be read ({exc})") from exc
    missing = [c for c in ("patient_id", "modality", "image") if c not in df.columns]
    if missing:
        raise ManifestError(f"case manifest {path}: missing column(s) {missing}; "
                            f"expected {list(MANIFEST_COLUMNS)}")
    for col in ("mask", "reader"):
        if col not in df.columns:
            df[col] = ""
    df = df[list(MANIFEST_COLUMNS)].copy()
    for col in ("patient_id", "modality", "image"):
        bad = df[col].str.strip() == ""
        if bad.any():
            rows = (np.flatnonzero(bad.to_numpy()) + 1).tolist()[:5]
            raise ManifestError(f"case manifest {path}: column '{col}' is empty in rows {rows}")
    base = path.resolve().parent
    df["image"] = [str(_resolve(base, p)) for p in df["image"]]
    df["mask"] = [str(_resolve(base, p)) if p.strip() else "" for p in df["mask"]]
    df["reader"] = [r.strip() or DEFAULT_READER for r in df["reader"]]
    df["row"] = np.arange(1, len(df) + 1)
    return df


def _resolve(base: Path, p: str) -> Path:
    q = Path(p.strip())
    return q if q.is_absolute() else base / q


def check_manifest(df: pd.DataFrame, modalities: list[str] | None = None,
                   require_mask: bool = True) -> dict[str, str]:
    """Per-patient reasons why a manifest's rows cannot be processed.

    Parameters
    ----------
    df : output of :func:`read_manifest`.
    modalities : modalities every patient must have; default: every modality that
        appears in the manifest.
    require_mask : whether each row needs a mask path.

    Returns
    -------
    dict
        ``patient_id -> reason`` (reasons joined by ``"; "``); patients not listed are fine.
    """
    reasons: dict[str, list[str]] = {}

    def add(pid: str, why: str) -> None:
        reasons.setdefault(pid, []).append(why)

    dup = df.duplicated(subset=["patient_id", "modality", "reader"], keep=False)
    for (pid, mod, rdr), grp in df[dup].groupby(["patient_id", "modality", "reader"]):
        add(pid, f"duplicate manifest rows {grp['row'].tolist()} "
                 f"(modality '{mod}', reader '{rdr}')")
    wanted = list(modalities) if modalities else list(dict.fromkeys(df["modality"]))
    readers = list(dict.fromkeys(df["reader"]))
    for pid, grp in df.groupby("patient_id", sort=False):
        for rdr in readers:
            have = set(grp.loc[grp["reader"] == rdr, "modality"])
            if not have and len(readers) > 1:
                add(pid, f"no rows for reader '{rdr}'")
                continue
            lost = [m for m in wanted if m not in have]
            if lost:
                add(pid, f"missing modality {lost} (reader '{rdr}')")
    for r in df.itertuples(index=False):
        if not Path(r.image).exists():
            add(r.patient_id, f"row {r.row}: image file not found: {r.image}")
        if require_mask and not r.mask:
            add(r.patient_id, f"row {r.row}: no mask path")
        elif r.mask and not Path(r.mask).exists():
            add(r.patient_id, f"row {r.row}: mask file not found: {r.mask}")
    return {pid: "; ".join(dict.fromkeys(w)) for pid, w in reasons.items()}


def manifest_cases(df: pd.DataFrame) -> list[Case]:
    """Group manifest rows into :class:`Case` objects, one per (patient, reader)."""
    cases = []
    for (pid, rdr), grp in df.groupby(["patient_id", "reader"], sort=False):
        series = tuple(Series(r.modality, Path(r.image), Path(r.mask) if r.mask else None)
                       for r in grp.itertuples(index=False))
        cases.append(Case(pid, rdr, series))
    return cases


def read_image(path: str | Path) -> sitk.Image:
    """Read a volume (NIfTI, NRRD, MetaImage), a DICOM series folder, or a tile.

    Parameters
    ----------
    path : file, or folder holding exactly one DICOM series.

    Returns
    -------
    SimpleITK.Image
        Tiles (PNG/TIFF) come back as 2D vector images (RGB).

    Raises
    ------
    ImageReadError
        Naming the path, when it is missing, unreadable, of unknown type or truncated.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        return _read_dicom_series(path)
    name = path.name.lower()
    if not name.endswith(VOLUME_SUFFIXES + TILE_SUFFIXES + (".dcm",)):
        raise ImageReadError(f"{path}: unknown image type; expected one of "
                             f"{VOLUME_SUFFIXES + TILE_SUFFIXES} or a DICOM folder")
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: unreadable ({_last_line(exc)})") from exc


def read_tile(path: str | Path) -> np.ndarray:
    """Read an H&E tile as an array of shape (H, W, 3), dtype uint8."""
    img = read_image(path)
    arr = sitk.GetArrayFromImage(img)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ImageReadError(f"{path}: expected an RGB tile, got array shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3]).astype(np.uint8)


def _read_dicom_series(folder: Path) -> sitk.Image:
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise ImageReadError(f"{folder}: no DICOM series found")
    if len(ids) > 1:
        raise ImageReadError(f"{folder}: holds {len(ids)} DICOM series; expected one")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise ImageReadError(f"{folder}: unreadable DICOM series ({_last_line(exc)})") from exc


def _last_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _check_nifti(path: Path) -> None:
    """Refuse a NIfTI file that is truncated or holds NaN/infinite voxels.

    ITK fills missing NIfTI data and reads NaN as 0 without a warning, so both
    checks are made here on the raw bytes.
    """
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                data = fh.read()
        else:
            data = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise ImageReadError(f"{path}: truncated or corrupt file ({exc})") from exc
    if len(data) < 348:
        raise ImageReadError(f"{path}: truncated file (header has {len(data)} of 348 bytes)")
    endian = "<" if struct.unpack("<i", data[:4])[0] == 348 else ">"
    if struct.unpack(endian + "i", data[:4])[0] != 348:
        raise ImageReadError(f"{path}: not a NIfTI-1 file")
    dim = struct.unpack(endian + "8h", data[40:56])
    datatype = struct.unpack(endian + "h", data[70:72])[0]
    bitpix = struct.unpack(endian + "h", data[72:74])[0]
    vox_offset = int(struct.unpack(endian + "f", data[108:112])[0])
    nbytes = _NIFTI_BYTES.get(datatype, max(bitpix, 8) // 8)
    ndim = max(1, min(int(dim[0]), 7))
    count = int(np.prod([max(int(d), 1) for d in dim[1:ndim + 1]]))
    expected = vox_offset + count * nbytes
    if len(data) < expected:
        raise ImageReadError(f"{path}: truncated file ({len(data)} of {expected} bytes)")
    if datatype in _NIFTI_FLOATS:
        vals = np.frombuffer(data, dtype=np.dtype(_NIFTI_FLOATS[datatype]).newbyteorder(endian),
                             count=count, offset=vox_offset)
        bad = int(np.count_nonzero(~np.isfinite(vals)))
        if bad:
            raise ImageReadError(f"{path}: {bad} NaN/infinite voxel(s)")
