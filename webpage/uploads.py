"""Uploads -> faces: each upload checked (format, size), then taken as an aligned face or aligned
from a photo by ffhq_alignment.py, as align_face.py aligns them."""
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from errors import PulseError
from device import pick_device
from runkit import exits, inputs
from runkit.image_tensors import bicubic_downscaler
from runkit.images import ImageReadError, read_rgb

ALIGN_IMPORT_ERROR = None
try:
    import ffhq_alignment
except ImportError as e:  # dlib missing: photos cannot be aligned, aligned faces still work
    ffhq_alignment, ALIGN_IMPORT_ERROR = None, e

MAX_UPLOAD_MB = 20
MAX_PIXELS = 40_000_000          # a bigger photo is refused before it is decoded
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP")
MAX_ALIGNED_SIDE = 128           # a square upload this small is taken as an aligned face, not a photo
FACE_SIZES = (8, 16, 32, 64, 128)
DEFAULT_FACE_SIZE = 32           # align_face.py's -output_size default


class UploadError(PulseError, ValueError):
    """An upload the page cannot use; the message names it and says why."""


@dataclass
class Face:
    """One face to search: an aligned upload, or a face found in a photo."""
    name: str                  # file-name stem of its results, unique among the faces of a page
    label: str                 # shown on the page
    low: Image.Image           # the small input PULSE searches from
    crop: Image.Image = None   # the 1024x1024 aligned crop it came from (None for an aligned upload)


def load_aligner(cache_dir):
    """(ffhq_alignment's FaceAligner, None), or (None, why photos cannot be aligned)."""
    if ffhq_alignment is None:
        return None, f"photos cannot be aligned here ({ALIGN_IMPORT_ERROR}); aligned faces still work"
    try:
        return ffhq_alignment.FaceAligner(cache_dir), None
    except (exits.SetupError, RuntimeError) as e:
        return None, f"photos cannot be aligned here ({e}); aligned faces still work"
def check_upload(path):
    """The upload's image format and size; UploadError when it is not a photo the page takes."""
    megabytes = path.stat().st_size / 2 ** 20
    if megabytes > MAX_UPLOAD_MB:
        raise UploadError(f"{path.name}: {megabytes:.0f} MB is more than the {MAX_UPLOAD_MB} MB this page takes")
    try:
        with warnings.catch_warnings():  # Pillow's warning of a huge image: the size is checked below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                image_format, (width, height) = im.format, im.size
    except Image.DecompressionBombError:  # over twice Pillow's own limit, which is above ours
        raise UploadError(f"{path.name}: far more than {MAX_PIXELS // 1_000_000} megapixels; "
                          f"shrink the photo first") from None
    except (UnidentifiedImageError, OSError):
        raise UploadError(f"{path.name}: not an image this page can read (JPEG, PNG or WebP)") from None
    if image_format not in PHOTO_FORMATS:
        raise UploadError(f"{path.name}: a {image_format} image; this page takes JPEG, PNG or WebP")
    if width * height > MAX_PIXELS:
        raise UploadError(f"{path.name}: {width}x{height} is more than {MAX_PIXELS // 1_000_000} megapixels; "
                          f"shrink the photo first")
    return width, height


def aligned_face(path, resolution):
    """A small square upload as it is; ImageReadError unless PULSE can search from it."""
    low = read_rgb(path)
    inputs.check_size(path.name, *low.size, resolution)
    return low


def faces_in_upload(path, aligner, face_size, resolution):
    """(name stem, label, small face, crop or None) for every face of one upload; UploadError if none."""
    width, height = check_upload(path)
    try:
        if max(width, height) <= MAX_ALIGNED_SIDE:
            return [(path.stem, f"{path.name} (aligned face)", aligned_face(path, resolution), None)]
        if aligner is None:
            raise UploadError(f"{path.name}: a photo, and photos cannot be aligned here; upload aligned faces "
                              f"(square, at most {MAX_ALIGNED_SIDE}x{MAX_ALIGNED_SIDE})")
        found = aligner.faces(path, bicubic_downscaler(ffhq_alignment.ALIGNED_SIZE // face_size, pick_device()))
    except ImageReadError as e:  # named by the upload's name, not by its temporary path
        raise UploadError(str(e).replace(str(path), path.name)) from None
    if not found:
        raise UploadError(f"{path.name}: no face found")
    return [(f"{path.stem}_{i}", f"{path.name}, face {i}", low, crop) for i, (crop, low) in enumerate(found)]


def faces_from_uploads(paths, aligner, face_size, resolution):
    """Every face of every upload, and one message per upload that gave none (the others go on)."""
    faces, problems, names = [], [], set()
    for path in map(Path, paths):
        try:
            found = faces_in_upload(path, aligner, face_size, resolution)
        except UploadError as e:
            problems.append(str(e))
            continue
        for stem, label, low, crop in found:
            name = unique_name(stem, names)
            names.add(name)
            faces.append(Face(name, label, low, crop))
    return faces, problems


def unique_name(stem, taken):
    """`stem`, or `stem-2`, `stem-3`, ... when two uploads share a name."""
    name, n = stem, 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}"
    return name
