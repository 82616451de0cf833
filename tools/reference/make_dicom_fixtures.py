"""DICOM fixtures and pydicom's 8-bit renderings of them.

Copies a few of pydicom's own test files (MIT licensed, shipped inside the pydicom wheel) into
crates/biomedclip/tests/fixtures/dicom, derives three more (MONOCHROME1, several windows, a
file without a window), and renders each the way the library documents:
`apply_modality_lut` -> `apply_voi_lut` (first window, or the given one) -> scaled to 0..255,
inverted for MONOCHROME1; without a window the frame's min..max is scaled to 0..255. Colour
files are converted to RGB. The renderings are written as PNGs under golden/dicom with an
index, dicom.json, that also lists the files that must fail and why.

    pip install -r tools/reference/requirements.txt
    python tools/reference/make_dicom_fixtures.py
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi_lut

ROOT = Path(__file__).resolve().parents[2] / "crates/biomedclip/tests/fixtures"
OUT = ROOT / "dicom"
GOLD = ROOT / "golden/dicom"

# name -> (source file, note)
COPIED = {
    "CT_small.dcm": "CT, Rescale Slope/Intercept, no window",
    "MR_small.dcm": "MR, window 600/1600",
    "MR_small_RLE.dcm": "RLE Lossless",
    "MR_small_jp2klossless.dcm": "JPEG 2000 lossless",
    "JPGExtended.dcm": "JPEG Extended 12-bit (the pure-Rust decoder reads 8-bit only: must fail)",
    "SC_rgb_jpeg_dcmtk.dcm": "JPEG baseline, YBR_FULL",
    "SC_rgb_jpeg_gdcm.dcm": "JPEG lossless (process 14), RGB",
    "SC_rgb_rle_2frame.dcm": "RLE colour, 2 frames",
    "SC_ybr_full_422_uncompressed.dcm": "native (uncompressed) YBR_FULL_422: dicom-pixeldata 0.10 sizes its frames wrongly, must fail",
    "rtdose_1frame.dcm": "32-bit dose grid",
    "MR_small_jpeg_ls_lossless.dcm": "JPEG-LS lossless (no bundled codec: must fail)",
}


def derived():
    """Files made from MR_small/CT_small to cover MONOCHROME1 and several windows."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(OUT / "MR_small_monochrome1.dcm")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.save_as(OUT / "CT_small_two_windows.dcm")
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.WindowCenter
    del ds.WindowWidth
    ds.save_as(OUT / "MR_small_no_window.dcm")


def windowed(arr, ds, window):
    """pydicom's VOI rendering, scaled to 0..255 (float)."""
    if window is not None:
        ds = ds.copy()
        ds.WindowCenter, ds.WindowWidth = window
        ds.VOILUTFunction = "LINEAR"
    if "WindowCenter" in ds:
        out = apply_voi_lut(arr, ds, index=0, prefer_lut=False)
        # apply_voi_lut spans the stored-bit range (after rescale when there is one).
        if ds.get("PixelRepresentation", 0) == 0:
            y_min, y_max = 0, 2 ** ds.BitsStored - 1
        else:
            y_min, y_max = -(2 ** (ds.BitsStored - 1)), 2 ** (ds.BitsStored - 1) - 1
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        if "RescaleSlope" in ds or "RescaleIntercept" in ds:
            y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
        return (out.astype(np.float64) - y_min) / (y_max - y_min) * 255.0
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros(arr.shape) if hi <= lo else (arr - lo) / (hi - lo) * 255.0


def render(path, frame=None, window=None):
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    frame = frames // 2 if frame is None else frame
    arr = ds.pixel_array
    if frames > 1:
        arr = arr[frame]
    pi = ds.PhotometricInterpretation
    if ds.SamplesPerPixel == 3:
        # pydicom 3's pixel_array already converts YBR_FULL(_422) to RGB (as_rgb=True).
        if arr.dtype != np.uint8:
            arr = arr / (2 ** ds.BitsStored - 1) * 255.0
        return np.clip(np.round(arr), 0, 255).astype(np.uint8), "RGB"
    values = apply_modality_lut(arr, ds).astype(np.float64)
    out = windowed(values, ds, window)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if pi == "MONOCHROME1":
        out = 255 - out
    return out, "L"


def high_bit_depth_goldens():
    """16-bit grayscale PNG mapped to 8 bits (full range, and a window) before the
    reference's Resize(224, bicubic) + CenterCrop(224)."""
    from torchvision import transforms

    src = ROOT / "images" / "gray16.png"
    values = np.asarray(Image.open(src)).astype(np.float64)
    lo, hi = values.min(), values.max()
    full = np.clip(np.round((values - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)
    c, w = 30000.0, 20000.0
    win = ((values - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    win[values <= c - 0.5 - (w - 1) / 2] = 0
    win[values > c - 0.5 + (w - 1) / 2] = 255
    win = np.clip(np.round(win), 0, 255).astype(np.uint8)
    tf = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(224)])
    tf(Image.fromarray(full, "L")).save(GOLD / "gray16_full_range.png")
    tf(Image.fromarray(win, "L")).save(GOLD / "gray16_window_30000_20000.png")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    GOLD.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        shutil.copy(get_testdata_file(name), OUT / name)
    derived()
    cases = []
    plan = [
        ("CT_small.dcm", None, None),
        ("CT_small.dcm", None, (-600, 1500)),
        ("CT_small_two_windows.dcm", None, None),
        ("MR_small.dcm", None, None),
        ("MR_small_RLE.dcm", None, None),
        ("MR_small_jp2klossless.dcm", None, None),
        ("MR_small_monochrome1.dcm", None, None),
        ("MR_small_no_window.dcm", None, None),
        ("SC_rgb_jpeg_dcmtk.dcm", None, None),
        ("SC_rgb_jpeg_gdcm.dcm", None, None),
        ("SC_rgb_rle_2frame.dcm", None, None),
        ("SC_rgb_rle_2frame.dcm", 0, None),
        ("rtdose_1frame.dcm", None, None),
    ]
    for name, frame, window in plan:
        pixels, mode = render(OUT / name, frame, window)
        tag = name.removesuffix(".dcm")
        if frame is not None:
            tag += f"_frame{frame}"
        if window is not None:
            tag += f"_window{window[0]}_{window[1]}"
        Image.fromarray(pixels, mode).save(GOLD / f"{tag}.png")
        cases.append({
            "file": name,
            "frame": frame,
            "window": None if window is None else f"{window[0]},{window[1]}",
            "golden": f"{tag}.png",
        })
    high_bit_depth_goldens()
    failures = [
        {"file": "MR_small_jpeg_ls_lossless.dcm", "error": "JPEG-LS Lossless"},
        {"file": "JPGExtended.dcm", "error": "JPEG Extended"},
        {"file": "SC_ybr_full_422_uncompressed.dcm", "error": "Explicit VR Little Endian"},
    ]
    (GOLD / "dicom.json").write_text(json.dumps(
        {"pydicom": pydicom.__version__, "cases": cases, "failures": failures}, indent=1))
    print(f"{len(cases)} renderings, {len(failures)} expected failure(s)")


if __name__ == "__main__":
    main()
