"""Faces found in photos and aligned the way FFHQ was built (NVlabs/ffhq-dataset): dlib's detector and
68-point landmarks, the 1024x1024 crop StyleGAN learnt, and PULSE's bicubic downscale of it.

FaceAligner is what align_face.py (the command line) and app.py's page align photos with;
packaged_predictor finds the dlib models that the face_recognition_models package ships.
"""
import importlib.util
import sys
from pathlib import Path

import dlib
import numpy as np
import scipy.ndimage
from PIL import Image

from runkit.exits import SetupError
from runkit.images import read_rgb
from weightfiles.download import fetch

PREDICTOR_NAME = "shape_predictor_68_face_landmarks.dat"
# Where the 2020 script downloaded the (uncompressed) predictor from.
# confirm=t skips the page Drive shows for files too big to virus-scan.
PREDICTOR_URL = "https://drive.google.com/uc?id=1huhv8PYpNNKbGCLOaYUjOgR1pY5pmbJx&confirm=t"
ALIGNED_SIZE = 1024
OUTPUT_SIZES = tuple(ALIGNED_SIZE >> k for k in range(ALIGNED_SIZE.bit_length()))  # a crop / a power of two
# FFHQ warps at 4x the final size and then Lanczos-resizes, so the bilinear warp cannot alias.
TRANSFORM_SIZE = 4096
EXIF_ORIENTATION = 0x0112


# ---------------------------------------------------------------- predictor

def packaged_predictor(name=PREDICTOR_NAME):
    """A dlib model file shipped by the face_recognition_models package (by default the 68-point
    landmark predictor), if installed.

    Found without importing the package: its __init__ needs pkg_resources, which
    current setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / name
        if path.is_file():
            return path
    return None


def locate_predictor(explicit, cache_dir):
    """-predictor, else face_recognition_models' copy, else the cache, else a download."""
    if explicit is not None:
        if not explicit.is_file():
            raise SetupError(f"-predictor {explicit}: no such file")
        return explicit
    cached = cache_dir / PREDICTOR_NAME
    for candidate in (packaged_predictor(), cached):
        if candidate is not None and candidate.is_file():
            return candidate
    print(f"{PREDICTOR_NAME} not installed; downloading it to {cached}", file=sys.stderr)
    try:
        fetch(PREDICTOR_URL, cached)
        return cached
    except OSError as e:  # requests' errors are OSErrors too
        raise SetupError(
            f"cannot find {PREDICTOR_NAME} and downloading it failed ({e}). "
            f"Run `pip install face_recognition_models`, or put the file at {cached}, "
            f"or pass -predictor PATH.") from e


def load_predictor(explicit, cache_dir):
    path = locate_predictor(explicit, cache_dir)
    try:
        return dlib.shape_predictor(str(path))
    except RuntimeError as e:
        raise SetupError(f"{path} is not a usable dlib shape predictor ({e}); replace it or pass -predictor") from e


# ---------------------------------------------------------------- landmarks

def detection_pixels(path, photo):
    """The pixels the landmarks are found on.

    The 2020 script found them on dlib's own decoding of the file and cropped Pillow's. dlib and
    Pillow decode JPEGs slightly differently, and the landmarks follow, so wherever the 2020 script
    could read the photo (an upright RGB JPEG or PNG) dlib decodes it here too. Photos it could not
    handle (EXIF-rotated, WebP, alpha, greyscale) use Pillow's upright RGB, the pixels cropped.
    """
    with Image.open(path) as im:
        readable_in_2020 = (im.format in ("JPEG", "PNG") and im.mode == "RGB"
                            and im.getexif().get(EXIF_ORIENTATION, 1) == 1)
    return dlib.load_rgb_image(str(path)) if readable_in_2020 else np.asarray(photo)


def find_landmarks(pixels, detector, predictor):
    """One (68, 2) array of (x, y) landmarks per face; the image is upsampled once, as in 2020."""
    return [np.array([(p.x, p.y) for p in predictor(pixels, box).parts()], dtype=np.float64)
            for box in detector(pixels, 1)]


# ---------------------------------------------------------------- FFHQ alignment

def rot90(v):
    """v turned a quarter turn (x, y) -> (-y, x)."""
    return np.array([-v[1], v[0]])


def face_quad(landmarks):
    """The FFHQ crop square: corners (top-left, bottom-left, bottom-right, top-right) and side."""
    eye_left = landmarks[36:42].mean(axis=0)
    eye_right = landmarks[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (landmarks[48] + landmarks[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # The horizontal axis averages two cues for the head's roll: the eye line and the
    # eye-to-mouth line turned upright. Its half-length scales with whichever span is larger.
    x = eye_to_eye - rot90(eye_to_mouth)
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = rot90(x)
    centre = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    return quad, np.hypot(*x) * 2


def bounding_box(quad):
    """Integer (left, top, right, bottom) enclosing the quad."""
    return (int(np.floor(quad[:, 0].min())), int(np.floor(quad[:, 1].min())),
            int(np.ceil(quad[:, 0].max())), int(np.ceil(quad[:, 1].max())))


def shrink_big_photo(img, quad, qsize):
    """Pre-shrink when the face is over twice the output size, so the warp reads fewer pixels."""
    shrink = int(np.floor(qsize / ALIGNED_SIZE * 0.5))
    if shrink <= 1:
        return img, quad, qsize
    size = (int(np.rint(img.size[0] / shrink)), int(np.rint(img.size[1] / shrink)))
    return img.resize(size, Image.Resampling.LANCZOS), quad / shrink, qsize / shrink


def crop_near_quad(img, quad, border):
    """Cut the photo down to the quad plus a border, to keep the padding step small."""
    left, top, right, bottom = bounding_box(quad)
    box = (max(left - border, 0), max(top - border, 0),
           min(right + border, img.size[0]), min(bottom + border, img.size[1]))
    if box[2] - box[0] < img.size[0] or box[3] - box[1] < img.size[1]:
        img, quad = img.crop(box), quad - box[:2]
    return img, quad


def pad_past_edges(img, quad, qsize, border):
    """Fill where the quad reaches beyond the photo: a mirror image of it, blurred and faded
    towards the median colour so the reflection does not read as a second face."""
    left, top, right, bottom = bounding_box(quad)
    pad = (max(border - left, 0), max(border - top, 0),
           max(right - img.size[0] + border, 0), max(bottom - img.size[1] + border, 0))
    if max(pad) <= border - 4:
        return img, quad
    # Python ints keep the fade mask float32, as numpy 1 computed it in 2020.
    pad_l, pad_t, pad_r, pad_b = (max(p, int(np.rint(qsize * 0.3))) for p in pad)
    pixels = np.pad(np.float32(img), ((pad_t, pad_b), (pad_l, pad_r), (0, 0)), "reflect")
    h, w, _ = pixels.shape
    rows, cols, _ = np.ogrid[:h, :w, :1]
    # fade: 1 at the outer edge of the padding, 0 at the photo's edge, negative inside it.
    fade = np.maximum(1.0 - np.minimum(np.float32(cols) / pad_l, np.float32(w - 1 - cols) / pad_r),
                      1.0 - np.minimum(np.float32(rows) / pad_t, np.float32(h - 1 - rows) / pad_b))
    blur = qsize * 0.02
    pixels += (scipy.ndimage.gaussian_filter(pixels, [blur, blur, 0]) - pixels) * np.clip(fade * 3.0 + 1.0, 0.0, 1.0)
    pixels += (np.median(pixels, axis=(0, 1)) - pixels) * np.clip(fade, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(pixels), 0, 255)), "RGB"), quad + [pad_l, pad_t]


def align_face(photo, landmarks):
    """The 1024x1024 FFHQ-aligned crop of the face with these landmarks."""
    quad, qsize = face_quad(landmarks)
    img, quad, qsize = shrink_big_photo(photo, quad, qsize)
    border = max(int(np.rint(qsize * 0.1)), 3)
    img, quad = crop_near_quad(img, quad, border)
    img, quad = pad_past_edges(img, quad, qsize, border)
    img = img.transform((TRANSFORM_SIZE, TRANSFORM_SIZE), Image.Transform.QUAD,
                        (quad + 0.5).flatten().tolist(), Image.Resampling.BILINEAR)
    return img.resize((ALIGNED_SIZE, ALIGNED_SIZE), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------- photos -> aligned faces

class FaceAligner:
    """What it takes to find and crop the faces of photos, loaded once: dlib's face detector and
    landmark model. align_face.py and app.py's page align through it. SetupError when the landmark
    model cannot be had."""

    def __init__(self, cache_dir, predictor=None):
        self.predictor = load_predictor(predictor, Path(cache_dir))
        self.detector = dlib.get_frontal_face_detector()

    def crops(self, path):
        """The 1024x1024 FFHQ-aligned crop of every face in the photo at `path`, in detection order;
        ImageReadError when it cannot be read."""
        photo = read_rgb(path)
        landmarks = find_landmarks(detection_pixels(path, photo), self.detector, self.predictor)
        return [align_face(photo, lm) for lm in landmarks]

    def faces(self, path, downscale):
        """[(1024x1024 crop, downscale(crop))] for every face in the photo, in detection order (`downscale`:
        PULSE's bicubic operator, image_tensors.bicubic_downscaler); ImageReadError as crops."""
        return [(crop, downscale(crop)) for crop in self.crops(path)]
