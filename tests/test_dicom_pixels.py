"""DICOM display pipeline and metadata of monai_mammo.data.dicom, on real files written by pydicom."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from monai_mammo.data.dicom import (
    check_presentation_intent,
    dicom_laterality,
    dicom_metadata,
    dicom_view,
    display_pixels,
    is_dicom_file,
    laterality_from_filename,
    normalize_laterality,
    normalize_view,
    presentation_intent,
    read_dicom,
    view_from_filename,
)
from monai_mammo.data.dicom_writer import MG_FOR_PROCESSING, write_mammogram_dicom
from monai_mammo.exceptions import MammoDataError

RAMP = np.arange(4096, dtype=np.uint16).reshape(64, 64)  # every 12-bit value once


def _write(tmp_path: Path, name: str = "img.dcm", pixels: np.ndarray = RAMP, **kwargs) -> Path:
    kwargs.setdefault("bits_stored", 12)
    return write_mammogram_dicom(tmp_path / name, pixels, **kwargs)


def _pixels(path: Path, **kwargs) -> np.ndarray:
    return display_pixels(read_dicom(path), source=path, **kwargs)


def _linear(x: np.ndarray, center: float, width: float, y_min: float, y_max: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out by hand."""
    x = np.asarray(x, dtype=np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
    y[x <= center - 0.5 - (width - 1) / 2] = y_min
    y[x > center - 0.5 + (width - 1) / 2] = y_max
    return y


def _view_codes(code: str, meaning: str) -> dict:
    """A one-item ViewCodeSequence for ``write_mammogram_dicom(extra=...)``."""
    item = Dataset()
    if code:
        item.CodeValue, item.CodingSchemeDesignator = code, "SCT"
    item.CodeMeaning = meaning
    return {"ViewCodeSequence": DicomSequence([item])}


def _voi_lut(descriptor: list[int], data: np.ndarray) -> dict:
    """A one-item VOILUTSequence (LUTData written as US) for ``write_mammogram_dicom(extra=...)``."""
    item = Dataset()
    item.add_new(0x00283002, "US", descriptor)
    item.add_new(0x00283006, "US", [int(v) for v in data])
    return {"VOILUTSequence": DicomSequence([item])}


def test_no_voi_returns_stored_values(tmp_path):
    out = _pixels(_write(tmp_path))
    assert out.shape == (64, 64)
    np.testing.assert_array_equal(out, RAMP)


def test_modality_lut_rescale(tmp_path):
    out = _pixels(_write(tmp_path, rescale=(2.0, -100.0)))
    np.testing.assert_allclose(out, RAMP * 2.0 - 100.0)


def test_window_linear(tmp_path):
    out = _pixels(_write(tmp_path, window=(2048, 1024)))
    np.testing.assert_allclose(out, _linear(RAMP, 2048, 1024, 0, 4095))
    assert out.min() == 0 and out.max() == 4095


def test_window_after_modality_lut(tmp_path):
    out = _pixels(_write(tmp_path, rescale=(2.0, -1000.0), window=(0, 2000)))
    # output range: the stored range through the rescale, [-1000, 7190]
    np.testing.assert_allclose(out, _linear(RAMP * 2.0 - 1000.0, 0, 2000, -1000.0, 7190.0))


def test_window_sigmoid(tmp_path):
    out = _pixels(_write(tmp_path, window=(1500, 800), voi_lut_function="SIGMOID"))
    expected = 4095.0 / (1.0 + np.exp(-4.0 * (RAMP - 1500.0) / 800.0))
    np.testing.assert_allclose(out, expected)


def test_first_of_multi_valued_windows(tmp_path):
    multi = _pixels(_write(tmp_path, "multi.dcm", window=([1000, 3000], [500, 800])))
    np.testing.assert_allclose(multi, _linear(RAMP, 1000, 500, 0, 4095))


def test_voi_lut_sequence_preferred_over_window(tmp_path):
    lut = _voi_lut([4096, 0, 16], np.arange(4096) * 10)
    out = _pixels(_write(tmp_path, window=(100, 50), extra=lut))
    np.testing.assert_array_equal(out, RAMP * 10.0)


def test_voi_lut_first_mapped_value_after_rescale(tmp_path):
    lut = _voi_lut([1000, 100, 16], np.arange(1000) * 3)
    out = _pixels(_write(tmp_path, rescale=(1.0, 50.0), extra=lut))
    index = np.clip(
        RAMP.astype(np.int64) + 50 - 100, 0, 999
    )  # below the first mapped value -> entry 0, above -> last
    np.testing.assert_array_equal(out, index * 3.0)


def test_apply_voi_false_keeps_modality_values(tmp_path):
    path = _write(
        tmp_path, rescale=(1.0, 10.0), window=(100, 50), extra=_voi_lut([4096, 0, 16], np.zeros(4096))
    )
    np.testing.assert_allclose(_pixels(path, apply_voi=False), RAMP + 10.0)


def test_monochrome1_inverted_after_window(tmp_path):
    out = _pixels(_write(tmp_path, photometric="MONOCHROME1", window=(2048, 1024)))
    np.testing.assert_allclose(out, 4095.0 - _linear(RAMP, 2048, 1024, 0, 4095))


def test_monochrome1_inverted_within_voi_lut_range(tmp_path):
    lut = _voi_lut([4096, 0, 16], np.arange(4096) * 10)
    out = _pixels(_write(tmp_path, photometric="MONOCHROME1", extra=lut))
    np.testing.assert_array_equal(out, 65535.0 - RAMP * 10.0)


def test_monochrome1_inverted_without_voi(tmp_path):
    path = _write(tmp_path, photometric="MONOCHROME1", rescale=(1.0, 1000.0), window=(10, 5))
    np.testing.assert_allclose(_pixels(path, apply_voi=False), 5095.0 - RAMP)


def test_padding_value_set_to_black_after_inversion(tmp_path):
    pixels = RAMP.copy()
    pixels[:8] = 0  # stored 0 is white in MONOCHROME1: bright after inversion unless treated as padding
    path = _write(tmp_path, pixels=pixels, photometric="MONOCHROME1", rescale=(1.0, 1000.0), padding_value=0)
    out = _pixels(path)
    assert np.all(out[:8] == 1000.0)  # the minimum of the output range [1000, 5095]
    np.testing.assert_allclose(out[8:], (1000.0 + 5095.0) - (RAMP[8:] + 1000.0))


def test_padding_range_limit_on_stored_values(tmp_path):
    path = _write(tmp_path, window=(100, 50), padding_value=4095, padding_range_limit=4000)
    out = _pixels(path)
    padded = (RAMP >= 4000) & (RAMP <= 4095)
    assert np.all(out[padded] == 0)
    np.testing.assert_allclose(out[~padded], _linear(RAMP, 100, 50, 0, 4095)[~padded])


def test_rle_compressed_file_loads(tmp_path):
    np.testing.assert_array_equal(_pixels(_write(tmp_path, transfer_syntax="rle")), RAMP)


def test_jpeg2000_file_loads(tmp_path):
    pytest.importorskip("openjpeg", reason="the dicom-codecs extra (pylibjpeg-openjpeg) is not installed")
    np.testing.assert_array_equal(_pixels(_write(tmp_path, transfer_syntax="jpeg2000")), RAMP)


def test_jpeg2000_without_codecs_names_the_extra(tmp_path):
    pytest.importorskip("openjpeg", reason="writing the JPEG 2000 file needs the dicom-codecs extra")
    path = _write(tmp_path, "j2k.dcm", transfer_syntax="jpeg2000")
    script = textwrap.dedent(
        f"""
        import sys
        for name in ("openjpeg", "pylibjpeg", "gdcm", "PIL"):  # Pillow can decode JPEG 2000 too
            sys.modules[name] = None
        from monai_mammo.data.dicom import display_pixels, read_dicom
        from monai_mammo.exceptions import MammoDependencyError
        try:
            display_pixels(read_dicom({str(path)!r}), source={str(path)!r})
        except MammoDependencyError as exc:
            print("MammoDependencyError:", exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "MammoDependencyError:" in result.stdout, result.stdout + result.stderr
    assert str(path) in result.stdout
    assert "JPEG 2000" in result.stdout
    assert 'pip install "monai_mammo[dicom-codecs]"' in result.stdout


def test_truncated_pixel_data_names_the_file(tmp_path):
    path = _write(tmp_path)
    path.write_bytes(path.read_bytes()[:-500])
    with pytest.raises(MammoDataError, match="pixel data") as info:
        _pixels(path)
    assert info.value.source == str(path)


def test_truncated_header_names_the_file(tmp_path):
    path = _write(tmp_path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(MammoDataError) as info:
        _pixels(path)
    assert str(path) in str(info.value)


def test_undecodable_element_names_the_file(tmp_path):
    """A damaged value representation (found by fuzzing) fails in read_dicom, not on later access."""
    path = _write(tmp_path)
    raw = path.read_bytes()
    tag = b"\x28\x00\x04\x00CS"  # (0028,0004) PhotometricInterpretation, explicit VR little endian
    assert raw.count(tag) == 1
    path.write_bytes(raw.replace(tag, b"\x28\x00\x04\x00C\x00"))
    for header_only in (False, True):
        with pytest.raises(MammoDataError, match="Unknown Value Representation") as info:
            read_dicom(path, stop_before_pixels=header_only)
        assert info.value.source == str(path)


def test_garbage_is_not_dicom(tmp_path):
    path = tmp_path / "garbage.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    assert not is_dicom_file(path)
    with pytest.raises(MammoDataError, match="not a DICOM file") as info:
        read_dicom(path)
    assert info.value.source == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(MammoDataError, match="file not found"):
        read_dicom(tmp_path / "absent.dcm")


def test_colour_image_rejected(tmp_path):
    path = _write(tmp_path, extra={"PhotometricInterpretation": "PALETTE COLOR"})
    with pytest.raises(MammoDataError, match="PhotometricInterpretation"):
        _pixels(path)


def test_for_processing_rejected_by_default(tmp_path):
    path = _write(tmp_path, presentation_intent="FOR PROCESSING")
    ds = read_dicom(path)
    assert presentation_intent(ds) == "FOR PROCESSING"
    with pytest.raises(MammoDataError, match="FOR PROCESSING") as info:
        check_presentation_intent(ds, source=path)
    assert info.value.source == str(path)
    check_presentation_intent(ds, allow_for_processing=True, source=path)


def test_for_processing_sop_class_without_intent_tag(tmp_path):
    path = _write(tmp_path, presentation_intent=None, extra={"SOPClassUID": MG_FOR_PROCESSING})
    ds = read_dicom(path)
    assert presentation_intent(ds) == "FOR PROCESSING"
    with pytest.raises(MammoDataError, match="FOR PROCESSING"):
        check_presentation_intent(ds, source=path)


def test_for_presentation_accepted(tmp_path):
    ds = read_dicom(_write(tmp_path))
    assert presentation_intent(ds) == "FOR PRESENTATION"
    check_presentation_intent(ds)


@pytest.mark.parametrize(
    "kwargs, name, fallback, expected",
    [
        ({"laterality": "L", "extra": {"Laterality": "R"}}, "x_R_CC.dcm", "R", "L"),  # ImageLaterality first
        ({"laterality": "R", "laterality_tag": "Laterality"}, "x_L_CC.dcm", "L", "R"),  # then Laterality
        ({"laterality": "", "extra": {"Laterality": "L"}}, "x.dcm", None, "L"),  # empty tag skipped
        ({"laterality": None}, "x_R_MLO.dcm", "L", "R"),  # then the file name
        ({"laterality": None}, "case.dcm", "LEFT", "L"),  # then the caller's value
        ({"laterality": "B"}, "case.dcm", None, None),
    ],
)
def test_laterality_order(tmp_path, kwargs, name, fallback, expected):
    path = _write(tmp_path, name, **kwargs)
    assert dicom_laterality(read_dicom(path), path, fallback) == expected


@pytest.mark.parametrize(
    "kwargs, name, fallback, expected",
    [
        (
            {"view": "CC", "extra": _view_codes("399368009", "medio-lateral oblique")},
            "x_L_ML.dcm",
            "ML",
            "CC",
        ),
        ({"view": "MLO", "view_tag": "ViewCodeSequence"}, "x_L_CC.dcm", "CC", "MLO"),  # by SNOMED code
        ({"view": "ML", "view_tag": "ViewCodeSequence", "extra": {"ViewPosition": ""}}, "x.dcm", None, "ML"),
        ({"view": None, "extra": _view_codes("", "cranio-caudal")}, "x_L_MLO.dcm", None, "CC"),  # CodeMeaning
        ({"view": None}, "x_L_MLO.dcm", "CC", "MLO"),  # the file name
        ({"view": None}, "case.dcm", "mlo", "MLO"),  # the caller's value
        ({"view": None}, "case.dcm", None, None),
    ],
)
def test_view_order(tmp_path, kwargs, name, fallback, expected):
    path = _write(tmp_path, name, **kwargs)
    assert dicom_view(read_dicom(path), path, fallback) == expected


@pytest.mark.parametrize(
    "name, laterality, view",
    [
        ("1_L_CC.png", "L", "CC"),
        ("0_R_MLO.png", "R", "MLO"),
        ("Mass-Training_P_00001_LEFT_CC.dcm", "L", "CC"),
        ("Calc-Test_P_00038_RIGHT_MLO_1.dcm", "R", "MLO"),
        ("22678622_61b13c59bcba149e_MG_R_ML_ANON.dcm", "R", "ML"),
        ("/data/study_R_CC/image.dcm", None, None),  # only the file name is read
        ("calcification.png", None, None),
        ("LCC.dcm", "L", "CC"),
    ],
)
def test_file_name_patterns(name, laterality, view):
    assert laterality_from_filename(name) == laterality
    assert view_from_filename(name) == view


@pytest.mark.parametrize(
    "value, expected", [("L", "L"), (" right ", "R"), ("LEFT", "L"), ("B", None), ("", None), (None, None)]
)
def test_normalize_laterality(value, expected):
    assert normalize_laterality(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("CC", "CC"),
        ("mlo", "MLO"),
        ("cranio-caudal", "CC"),
        ("medio-lateral oblique", "MLO"),
        ("medio-lateral", "ML"),
        ("399162004", "CC"),
        ("XCCL", "XCCL"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_view(value, expected):
    assert normalize_view(value) == expected


def test_metadata(tmp_path):
    path = _write(
        tmp_path,
        laterality="R",
        view="MLO",
        patient_id="P_7",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        pixel_spacing=(0.07, 0.08),
        photometric="MONOCHROME1",
    )
    meta = dicom_metadata(read_dicom(path), path)
    assert meta == {
        "laterality": "R",
        "view": "MLO",
        "patient_id": "P_7",
        "study_instance_uid": "1.2.3",
        "series_instance_uid": "1.2.3.4",
        "sop_instance_uid": "1.2.3.4.5",
        "pixel_spacing": (0.07, 0.08),
        "bits_stored": 12,
        "photometric_interpretation": "MONOCHROME1",
        "presentation_intent": "FOR PRESENTATION",
    }
    assert all(type(v) in (str, int, tuple) for v in meta.values())


def test_imager_pixel_spacing_fallback(tmp_path):
    path = _write(tmp_path, pixel_spacing=None, extra={"ImagerPixelSpacing": [0.05, 0.06]})
    assert dicom_metadata(read_dicom(path))["pixel_spacing"] == (0.05, 0.06)
    path = _write(tmp_path, "none.dcm", pixel_spacing=None)
    assert dicom_metadata(read_dicom(path))["pixel_spacing"] is None
