"""Fuzzing of the input parsers: any generated input either parses or raises a MammoError.

Each test writes hypothesis-generated (mutated) inputs to real files and calls the parser;
the property is that nothing but :class:`monai_mammo.exceptions.MammoError` subclasses
escapes (no ``KeyError``, ``struct.error``, ``UnicodeDecodeError``...). The default suite runs
a few hundred examples in total; the slow variant runs ``MAMMO_FUZZ_EXAMPLES`` examples in
total (default 10,000) spread over the parsers::

    pytest -m slow tests/test_fuzz_parsers.py
    MAMMO_FUZZ_EXAMPLES=1000 pytest -m slow tests/test_fuzz_parsers.py
"""

from __future__ import annotations

import csv
import io
import os
import pickle
import plistlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_mammo.data.dicom import dicom_metadata, read_dicom
from monai_mammo.data.dicom_writer import write_mammogram_dicom
from monai_mammo.data.indexers.bbox_csv import BBOX_CSV_COLUMNS, index_bbox_csv
from monai_mammo.data.indexers.cbis_ddsm import index_cbis_ddsm
from monai_mammo.data.indexers.inbreast import index_inbreast, parse_inbreast_xml, roi_to_mask
from monai_mammo.data.indexers.nyu import index_nyu
from monai_mammo.data.readers import MammogramReader
from monai_mammo.data.safe_pickle import restricted_load
from monai_mammo.data.synthetic.phantom import synthesize_mammogram
from monai_mammo.data.synthetic.writers.cbis_ddsm import write_cbis_ddsm
from monai_mammo.data.synthetic.writers.inbreast import write_inbreast
from monai_mammo.exceptions import MammoError, MammoSkip

#: number of fuzz tests sharing the example budget
N_FUZZ_TESTS = 10
#: examples per test in the default (fast) suite: a few hundred in total
FAST_EXAMPLES = 40
#: examples per test in the slow run: ``MAMMO_FUZZ_EXAMPLES`` (default 10,000) spread over the tests
SLOW_EXAMPLES = max(1, int(os.environ.get("MAMMO_FUZZ_EXAMPLES", "10000")) // N_FUZZ_TESTS)

_COMMON = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}
FAST = settings(max_examples=FAST_EXAMPLES, **_COMMON)
SLOW = settings(max_examples=SLOW_EXAMPLES, **_COMMON)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CBIS_CSV = "mass_case_description_train_set.csv"
NYU_VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")

# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------

#: printable-ish text including separators, quotes, numbers and non-ASCII characters
CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "L", "R", "LEFT", "CC", "MLO", "nan", "-1", "1e309", "0", "3", "4a", "MALIGNANT"]),
    st.integers(-(10**12), 10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)


def _mutations(max_size: int) -> st.SearchStrategy[list[tuple[int, int]]]:
    """(position, new byte) pairs; positions are taken modulo the input length."""
    return st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=max_size)


def _mutate_bytes(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    """Overwrite bytes at the given positions, then optionally truncate."""
    buf = bytearray(data)
    for pos, value in flips:
        buf[pos % len(buf)] = value
    return bytes(buf if cut is None else buf[: cut % (len(buf) + 1)])


#: text plistlib can encode (no control characters or surrogates)
PLIST_TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
PLIST_SCALARS = st.one_of(st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), PLIST_TEXT)
PLIST_LEAVES = st.one_of(st.none(), PLIST_SCALARS)
PLIST_VALUES = st.recursive(
    PLIST_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(PLIST_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)
PICKLE_VALUES = st.recursive(
    st.one_of(PLIST_LEAVES, st.binary(max_size=8), st.complex_numbers(allow_nan=True)),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.frozensets(st.integers(0, 5), max_size=3),
        st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(NYU_VIEWS)), children, max_size=5),
    ),
    max_leaves=16,
)

# ---------------------------------------------------------------------------------------------
# fixtures: one valid input per parser, written once per module
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A module-wide scratch folder (hypothesis reuses it across examples)."""
    folder = Path(tempfile.mkdtemp(prefix="mammo_fuzz_"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def valid_dicom(workdir: Path) -> bytes:
    """The bytes of a valid DICOM mammogram written from a synthetic phantom."""
    phantom = synthesize_mammogram(7, shape=(128, 96), text_markers=False)
    path = write_mammogram_dicom(  # fixed UIDs: the same bytes, hence the same mutations, on every run
        workdir / "valid.dcm",
        phantom.pixels,
        bits_stored=phantom.bits_stored,
        window=phantom.window,
        study_uid="1.2.826.0.1.3680043.10.1",
        series_uid="1.2.826.0.1.3680043.10.1.1",
        sop_uid="1.2.826.0.1.3680043.10.1.1.1",
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def cbis_root(workdir: Path) -> Path:
    """A small synthetic CBIS-DDSM download (DICOMs on disk)."""
    return write_cbis_ddsm(workdir / "cbis", n_patients=2, seed=5, image_shape=(128, 96))


@pytest.fixture(scope="module")
def cbis_rows(cbis_root: Path) -> list[list[str]]:
    """The rows (header first) of the valid mass training CSV."""
    with open(cbis_root / CBIS_CSV, newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def inbreast_root(workdir: Path) -> Path:
    """A one-patient synthetic INbreast folder."""
    return write_inbreast(workdir / "inbreast", n_patients=1, seed=2, image_shape=(128, 96))


@pytest.fixture(scope="module", params=["rle", "jpeg2000"])
def compressed_dicom(request: pytest.FixtureRequest, workdir: Path) -> bytes:
    """The bytes of a valid RLE- or JPEG 2000-compressed DICOM mammogram (fixed UIDs)."""
    if request.param == "jpeg2000":
        pytest.importorskip("openjpeg", reason="the dicom-codecs extra (pylibjpeg-openjpeg) is not installed")
    phantom = synthesize_mammogram(8, shape=(128, 96), text_markers=False)
    path = write_mammogram_dicom(
        workdir / f"valid_{request.param}.dcm",
        phantom.pixels,
        bits_stored=phantom.bits_stored,
        window=phantom.window,
        transfer_syntax=request.param,
        study_uid="1.2.826.0.1.3680043.10.2",
        series_uid="1.2.826.0.1.3680043.10.2.1",
        sop_uid="1.2.826.0.1.3680043.10.2.1.1",
    )
    return path.read_bytes()


def _assert_only_mammo_errors(call: Callable[[], Any]) -> Any:
    """Run ``call``; a MammoError is an accepted outcome, any other exception fails the test."""
    try:
        return call()
    except MammoError:
        return None


# ---------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------


def _read_dicom_everything(path: Path) -> None:
    """Header, metadata and display pixels of a DICOM file."""
    reader = MammogramReader(allow_for_processing=True)
    arr, meta = reader.get_data(reader.read(path))
    assert arr.ndim >= 2 and meta["filename_or_obj"] == str(path)
    dicom_metadata(read_dicom(path), path)


def _dicom_bytes_case(workdir: Path, valid: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:
    path = workdir / "mutated.dcm"
    path.write_bytes(_mutate_bytes(valid, flips, cut))
    _assert_only_mammo_errors(lambda: _read_dicom_everything(path))


TAG_VALUES = st.one_of(
    st.none(), st.text(max_size=6), st.sampled_from(["L", "R", "B", "CC", "MLO", "XCCL", "ML"])
)


def _dicom_tags_case(workdir: Path, tags: dict[str, Any]) -> None:
    pixels = synthesize_mammogram(1, shape=(128, 96), text_markers=False).pixels
    path = workdir / "tags.dcm"
    try:
        write_mammogram_dicom(path, pixels, **tags)
    except MammoError:
        return  # the writer refused the combination: nothing to read
    except (ValueError, TypeError, OverflowError):
        return  # pydicom refused to encode the value: not a parser input
    _assert_only_mammo_errors(lambda: _read_dicom_everything(path))


DICOM_TAGS = st.fixed_dictionaries(
    {
        "laterality": TAG_VALUES,
        "view": TAG_VALUES,
        "photometric": st.sampled_from(
            ["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "", "YBR_FULL"]
        ),
        "bits_stored": st.integers(0, 40),
        "presentation_intent": st.sampled_from([None, "FOR PRESENTATION", "FOR PROCESSING", "junk"]),
        "pixel_spacing": st.one_of(st.none(), st.tuples(st.floats(-1, 1e3), st.floats(-1, 1e3))),
        "laterality_tag": st.sampled_from(["ImageLaterality", "Laterality"]),
        "view_tag": st.sampled_from(["ViewPosition", "ViewCodeSequence"]),
    }
)


@FAST
@given(flips=_mutations(16), cut=st.one_of(st.none(), st.integers(0, 2**20)))
def test_fuzz_dicom_bytes(workdir: Path, valid_dicom: bytes, flips, cut) -> None:
    _dicom_bytes_case(workdir, valid_dicom, flips, cut)


@FAST
@given(flips=_mutations(16), cut=st.one_of(st.none(), st.integers(0, 2**20)))
def test_fuzz_compressed_dicom_bytes(workdir: Path, compressed_dicom: bytes, flips, cut) -> None:
    """Damaged RLE / JPEG 2000 pixel data (and headers) reach the decoders: only project errors."""
    _dicom_bytes_case(workdir, compressed_dicom, flips, cut)


@FAST
@given(tags=DICOM_TAGS)
def test_fuzz_dicom_tags(workdir: Path, tags: dict[str, Any]) -> None:
    _dicom_tags_case(workdir, tags)


# ---------------------------------------------------------------------------------------------
# CBIS-DDSM description CSVs
# ---------------------------------------------------------------------------------------------

CSV_EDITS = st.lists(
    st.one_of(
        st.tuples(st.just("cell"), st.integers(0, 10**6), st.integers(0, 10**6), CELLS),
        st.tuples(st.just("drop_column"), st.integers(0, 10**6)),
        st.tuples(st.just("add_column"), CELLS),
        st.tuples(st.just("duplicate_row"), st.integers(0, 10**6)),
        st.tuples(st.just("drop_cell"), st.integers(0, 10**6)),
    ),
    max_size=8,
)


def _edit_rows(rows: list[list[str]], edits: list[tuple]) -> list[list[str]]:
    """Apply the generated edits to a copy of ``rows`` (header first)."""
    rows = [list(row) for row in rows]
    for edit in edits:
        if edit[0] == "cell":
            row = rows[edit[1] % len(rows)]
            if row:
                row[edit[2] % len(row)] = edit[3]
        elif edit[0] == "drop_column":
            column = edit[1] % max(1, len(rows[0]))
            rows = [[c for i, c in enumerate(row) if i != column] for row in rows]
        elif edit[0] == "add_column":
            rows = [[*row, edit[1]] for row in rows]
        elif edit[0] == "duplicate_row":
            rows.append(list(rows[edit[1] % len(rows)]))
        else:
            row = rows[edit[1] % len(rows)]
            if row:
                row.pop()
    return rows


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass"))


def _cbis_case(
    workdir: Path, root: Path, rows: list[list[str]], edits: list[tuple], check_files: bool
) -> None:
    path = workdir / "cbis_csv" / CBIS_CSV
    path.parent.mkdir(exist_ok=True)
    _write_rows(path, _edit_rows(rows, edits))
    result = _assert_only_mammo_errors(
        lambda: index_cbis_ddsm(root, check_files=check_files, csv_files=[path])
    )
    if result is not None:
        assert all(item["findings"] for item in result.items)


@FAST
@given(edits=CSV_EDITS, check_files=st.booleans())
def test_fuzz_cbis_ddsm_csv(
    workdir: Path, cbis_root: Path, cbis_rows: list[list[str]], edits, check_files
) -> None:
    _cbis_case(workdir, cbis_root, cbis_rows, edits, check_files)


# ---------------------------------------------------------------------------------------------
# INbreast XML
# ---------------------------------------------------------------------------------------------


def _xml_structure_case(workdir: Path, images: Any, points: list[str]) -> None:
    """A plist of generated structure, or of a generated ROI with generated Point_px strings."""
    path = workdir / "structure.xml"
    roi = {"Name": "Mass", "NumberOfPoints": len(points), "Point_px": points}
    for document in ({"Images": images}, {"Images": [{"NumberOfROIs": 1, "ROIs": [roi]}]}):
        path.write_bytes(plistlib.dumps(document))
        parsed = _assert_only_mammo_errors(lambda: parse_inbreast_xml(path))
        for _, pts in parsed or []:
            assert roi_to_mask(pts, (16, 12)).shape == (16, 12)


def _xml_bytes_case(inbreast_root: Path, valid: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:
    """A byte-mutated INbreast XML, parsed alone and indexed with its DICOM."""
    xml_path = sorted((inbreast_root / "AllXML").glob("*.xml"))[0]
    xml_path.write_bytes(_mutate_bytes(valid, flips, cut))
    try:
        _assert_only_mammo_errors(lambda: parse_inbreast_xml(xml_path))
        _assert_only_mammo_errors(lambda: index_inbreast(inbreast_root, check_files=False))
    finally:
        xml_path.write_bytes(valid)


POINTS = st.lists(
    st.one_of(
        PLIST_TEXT,
        st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True)).map(str),
        st.tuples(st.integers(-(10**9), 10**9), st.integers(-(10**9), 10**9)).map(
            lambda p: f"({p[0]}, {p[1]})"
        ),
    ),
    max_size=5,
)


@pytest.fixture(scope="module")
def valid_xml(inbreast_root: Path) -> bytes:
    return sorted((inbreast_root / "AllXML").glob("*.xml"))[0].read_bytes()


@FAST
@given(images=PLIST_VALUES, points=POINTS)
def test_fuzz_inbreast_xml_structure(workdir: Path, images, points) -> None:
    _xml_structure_case(workdir, images, points)


@FAST
@given(flips=_mutations(8), cut=st.one_of(st.none(), st.integers(0, 2**20)))
def test_fuzz_inbreast_xml_bytes(inbreast_root: Path, valid_xml: bytes, flips, cut) -> None:
    _xml_bytes_case(inbreast_root, valid_xml, flips, cut)


def test_inbreast_far_points_are_refused_not_drawn(workdir: Path) -> None:
    """Regression (found by fuzzing): a ROI at 1e9 px made the outline drawing allocate gigabytes."""
    path = workdir / "far.xml"
    points = ["(0, 0)", "(1000000000, 5)", "(3, 1000000000)"]
    roi = {"Name": "Mass", "NumberOfPoints": 3, "Point_px": points}
    path.write_bytes(plistlib.dumps({"Images": [{"NumberOfROIs": 1, "ROIs": [roi]}]}))
    with pytest.raises(MammoSkip, match=r"far.xml: ROI 0 \('Mass'\): point coordinate beyond") as info:
        parse_inbreast_xml(path)
    assert info.value.reason == "bad_points"


def test_inbreast_unknown_xml_encoding_is_a_bad_xml_skip(workdir: Path) -> None:
    """Regression (found by fuzzing): a flipped byte in ``encoding="UTF-8"`` raised LookupError."""
    path = workdir / "encoding.xml"
    path.write_bytes(plistlib.dumps({"Images": []}).replace(b'encoding="UTF-8"', b'encoding="ATF-8"'))
    with pytest.raises(MammoSkip, match=r"encoding.xml: not an OsiriX plist: unknown encoding") as info:
        parse_inbreast_xml(path)
    assert info.value.reason == "bad_xml"


# ---------------------------------------------------------------------------------------------
# NYU exam lists (pickles)
# ---------------------------------------------------------------------------------------------

BASE_EXAM = {"horizontal_flip": "NO", "L-CC": ["a"], "R-CC": ["b"], "L-MLO": ["c"], "R-MLO": ["d"]}
EXAM_KEYS = st.sampled_from(
    [
        "horizontal_flip",
        *NYU_VIEWS,
        "best_center",
        "window_location",
        "cancer_label",
        "distance_from_starting_side",
        "birads",
        "findings",
        "rows",
    ]
)


def _nyu_case(workdir: Path, exam_list: Any) -> None:
    path = workdir / "exam_list.pkl"
    path.write_bytes(pickle.dumps(exam_list))
    for on_error in ("skip", "raise"):
        result = _assert_only_mammo_errors(
            lambda on_error=on_error: index_nyu(workdir, exam_list=path, on_error=on_error, check_files=False)
        )
        if result is not None:
            assert all(item["view"] in ("CC", "MLO") for item in result.items)


@FAST
@given(value=PICKLE_VALUES, edits=st.dictionaries(EXAM_KEYS, PICKLE_VALUES, max_size=3))
def test_fuzz_nyu_exam_list(workdir: Path, value, edits) -> None:
    _nyu_case(workdir, [BASE_EXAM, {**BASE_EXAM, **edits}, value])


class _Global:
    """Pickles as a call to an arbitrary importable global (the forbidden-global attack)."""

    def __init__(self, target: Any, args: tuple) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple:
        return self.target, self.args


GLOBALS = st.sampled_from(
    [
        (os.getcwd, ()),
        (print, ("fuzz",)),
        (eval, ("1",)),
        (shutil.disk_usage, (".",)),
        (getattr, (1, "real")),
        (Path, ("x",)),
        (dict, ()),
        (complex, (1, 2)),
        (int, ("7",)),
    ]
)


@FAST
@given(target=GLOBALS, where=EXAM_KEYS, flips=st.one_of(st.none(), _mutations(4)))
def test_fuzz_nyu_forbidden_globals(workdir: Path, target, where, flips) -> None:
    _globals_case(workdir, target, where, flips)


def _globals_case(workdir: Path, target: tuple, where: str, flips: list[tuple[int, int]] | None) -> None:
    data = pickle.dumps([{**BASE_EXAM, where: _Global(*target)}])
    if flips is not None:
        data = _mutate_bytes(data, flips, None)
    path = workdir / "evil.pkl"
    path.write_bytes(data)
    _assert_only_mammo_errors(lambda: restricted_load(path))
    _assert_only_mammo_errors(lambda: index_nyu(workdir, exam_list=path, check_files=False))


# ---------------------------------------------------------------------------------------------
# bounding-box CSVs
# ---------------------------------------------------------------------------------------------

BBOX_ROWS = [
    list(BBOX_CSV_COLUMNS),
    ["a.dcm", "P1", "S1", "L", "CC", "calcification", "Malignant", "10", "20", "30", "40", "", ""],
    ["a.dcm", "P1", "S1", "L", "CC", "mass", "Benign", "1", "2", "3", "4", "", ""],
    ["b.dcm", "P2", "S2", "R", "MLO", "", "", "", "", "", "", "", ""],
]


def _bbox_case(workdir: Path, edits: list[tuple], check_files: bool) -> None:
    folder = workdir / "bbox"
    if not (folder / "a.dcm").is_file():
        pixels = synthesize_mammogram(3, shape=(128, 96), text_markers=False).pixels
        write_mammogram_dicom(folder / "a.dcm", pixels)
        write_mammogram_dicom(folder / "b.dcm", pixels, laterality="R", view="MLO")
    header = [*BBOX_CSV_COLUMNS, "lesion_id", "split"]
    rows = [header] + [row[: len(header)] + [""] * (len(header) - len(row)) for row in BBOX_ROWS[1:]]
    _write_rows(folder / "annotations.csv", _edit_rows(rows, edits))
    _assert_only_mammo_errors(lambda: index_bbox_csv(folder, check_files=check_files))


@FAST
@given(edits=CSV_EDITS, check_files=st.booleans())
def test_fuzz_bbox_csv(workdir: Path, edits, check_files) -> None:
    _bbox_case(workdir, edits, check_files)


# ---------------------------------------------------------------------------------------------
# the slow variant: the same cases with SLOW_EXAMPLES examples each
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@SLOW
@given(flips=_mutations(32), cut=st.one_of(st.none(), st.integers(0, 2**20)))
def test_fuzz_dicom_bytes_slow(workdir: Path, valid_dicom: bytes, flips, cut) -> None:
    _dicom_bytes_case(workdir, valid_dicom, flips, cut)


@pytest.mark.slow
@SLOW
@given(flips=_mutations(32), cut=st.one_of(st.none(), st.integers(0, 2**20)))
def test_fuzz_compressed_dicom_bytes_slow(workdir: Path, compressed_dicom: bytes, flips, cut) -> None:
    _dicom_bytes_case(workdir, compressed_dicom, flips, cut)


@pytest.mark.slow
@SLOW
@given(tags=DICOM_TAGS)
def test_fuzz_dicom_tags_slow(workdir: Path, tags: dict[str, Any]) -> None:
    _dicom_tags_case(workdir, tags)


@pytest.mark.slow
@SLOW
@given(edits=CSV_EDITS, check_files=st.booleans())
def test_fuzz_cbis_ddsm_csv_slow(
    workdir: Path, cbis_root: Path, cbis_rows: list[list[str]], edits, check_files
) -> None:
    _cbis_case(workdir, cbis_root, cbis_rows, edits, check_files)


@pytest.mark.slow
@SLOW
@given(images=PLIST_VALUES, points=POINTS)
def test_fuzz_inbreast_xml_structure_slow(workdir: Path, images, points) -> None:
    _xml_structure_case(workdir, images, points)


@pytest.mark.slow
@SLOW
@given(flips=_mutations(16), cut=st.one_of(st.none(), st.integers(0, 2**20)))
def test_fuzz_inbreast_xml_bytes_slow(inbreast_root: Path, valid_xml: bytes, flips, cut) -> None:
    _xml_bytes_case(inbreast_root, valid_xml, flips, cut)


@pytest.mark.slow
@SLOW
@given(value=PICKLE_VALUES, edits=st.dictionaries(EXAM_KEYS, PICKLE_VALUES, max_size=3))
def test_fuzz_nyu_exam_list_slow(workdir: Path, value, edits) -> None:
    _nyu_case(workdir, [BASE_EXAM, {**BASE_EXAM, **edits}, value])


@pytest.mark.slow
@SLOW
@given(target=GLOBALS, where=EXAM_KEYS, flips=st.one_of(st.none(), _mutations(4)))
def test_fuzz_nyu_forbidden_globals_slow(workdir: Path, target, where, flips) -> None:
    _globals_case(workdir, target, where, flips)


@pytest.mark.slow
@SLOW
@given(edits=CSV_EDITS, check_files=st.booleans())
def test_fuzz_bbox_csv_slow(workdir: Path, edits, check_files) -> None:
    _bbox_case(workdir, edits, check_files)
