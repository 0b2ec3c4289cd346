"""NIQE, the no-reference quality score the PULSE paper reports (lower is better).

A port of MATLAB's `niqe` (Mittal, Soundararajan and Bovik, "Making a Completely Blind Image
Quality Analyzer", 2012) that reproduces its numbers: the Y channel of `rgb2ycbcr`, 96x96 blocks
at two scales, asymmetric generalised Gaussian fits of the normalised coefficients and of their
neighbour products, and the distance of a Gaussian fitted to those features from the pristine
model in niqe_pris_params.npz (see NIQE_NOTICE.txt).
"""
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.special import gamma

BLOCK = 96
PARAMS_FILE = Path(__file__).parent / "niqe_pris_params.npz"
# MATLAB's 0.2:0.001:10, built from integers so each value is the correctly rounded one
ALPHA_GRID = np.arange(200, 10001) / 1000
GAMMA_RATIO = gamma(2 / ALPHA_GRID) ** 2 / (gamma(1 / ALPHA_GRID) * gamma(3 / ALPHA_GRID))
# circshift offsets of the four neighbour products, in the order of the pristine features
NEIGHBOUR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@lru_cache(maxsize=1)
def pristine_model():
    """Mean [36], covariance [36, 36] and the 7x7 Gaussian window of the pristine model."""
    with np.load(PARAMS_FILE, allow_pickle=False) as params:
        return params["mu_pris_param"][0], params["cov_pris_param"], params["gaussian_window"]


def rgb_to_y(image):
    """Luma of MATLAB's rgb2ycbcr (BT.601 studio range) for RGB in 0..255, rounded like its uint8 output."""
    rgb = np.asarray(image, dtype=np.float64) / 255
    luma = 16 + rgb @ np.array([65.481, 128.553, 24.966])
    return np.floor(luma + 0.5)  # MATLAB rounds halves up; np.round would round them to even


def as_luma(image):
    """The float64 channel NIQE works on: Y of an HxWx3 RGB image, or an HxW grey image as is."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3:
        return rgb_to_y(image)
    if image.ndim == 2:
        return image.astype(np.float64)
    raise ValueError(f"NIQE expects an HxWx3 RGB or an HxW grey image, got shape {image.shape}")


def cubic(x):
    """Keys' cubic convolution kernel with a = -0.5, the one MATLAB's imresize uses."""
    x = np.abs(x)
    near = 1.5 * x**3 - 2.5 * x**2 + 1
    far = -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def half_resize_matrix(length):
    """The ceil(length/2) x length matrix of MATLAB's imresize(., 0.5, 'bicubic') along one axis.

    Antialiasing stretches the kernel by 2 (8 taps, MATLAB looks at 10); each output's weights
    are normalised to sum to 1, and taps past the border are mirrored with the edge pixel repeated.
    """
    outputs = np.arange(-(-length // 2))
    centres = 2 * (outputs + 1) - 0.5  # input coordinate of each output pixel, 1-based as in MATLAB
    taps = np.floor(centres - 4)[:, None] + np.arange(10)
    weights = 0.5 * cubic(0.5 * (centres[:, None] - taps))
    weights /= weights.sum(axis=1, keepdims=True)
    mirrored = np.concatenate([np.arange(length), np.arange(length)[::-1]])
    columns = mirrored[(taps.astype(int) - 1) % (2 * length)]
    matrix = np.zeros((len(outputs), length))
    np.add.at(matrix, (outputs[:, None], columns), weights)
    return matrix


def matlab_imresize_half(image):
    """MATLAB's imresize(image, 0.5) (bicubic with antialiasing) of a 2-D float image."""
    return half_resize_matrix(image.shape[0]) @ image @ half_resize_matrix(image.shape[1]).T


def normalised_coefficients(image, window):
    """Mean-subtracted, contrast-normalised coefficients, with MATLAB's replicated borders.

    Computed in single precision like the reference scores: the local variance E[I^2] - mu^2
    loses digits there, and in float64 baboon.png scores 5.72996 instead of MATLAB's 5.72957.
    """
    image = image.astype(np.float32)
    mu = ndimage.correlate(image, window, mode="nearest")
    sigma = np.sqrt(np.abs(ndimage.correlate(image * image, window, mode="nearest") - mu * mu))
    return ((image - mu) / (sigma + 1)).astype(np.float64)


def split_blocks(image, size):
    """The size x size blocks of an image whose sides are multiples of size, as one array."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return image.reshape(rows, size, cols, size).swapaxes(1, 2).reshape(rows * cols, size, size)


def closest_alpha(ratio, chunk=512):
    """The grid alpha whose gamma ratio is nearest to each target ratio.

    Chunked so that big images do not build one (targets x 9801) array. A NaN target gives the
    first grid value, as MATLAB's min does.
    """
    index = [np.argmin((GAMMA_RATIO - ratio[i:i + chunk, None]) ** 2, axis=1)
             for i in range(0, len(ratio), chunk)]
    return ALPHA_GRID[np.concatenate(index)]


def aggd_fit(samples):
    """Fit an asymmetric generalised Gaussian to each row of `samples` by moment matching.

    Returns (alpha, beta_left, beta_right), one value per row. A row without negative (or
    positive) values has NaN betas, which the model fit later skips.
    """
    negative, positive = samples < 0, samples > 0
    squares = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma_left = np.sqrt((squares * negative).sum(axis=1) / negative.sum(axis=1))
        sigma_right = np.sqrt((squares * positive).sum(axis=1) / positive.sum(axis=1))
        g = sigma_left / sigma_right
        rhat = np.abs(samples).mean(axis=1) ** 2 / squares.mean(axis=1)
        ratio = rhat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = closest_alpha(ratio)
    scale = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, sigma_left * scale, sigma_right * scale


def block_features(coefficients, size):
    """The 18 NIQE features of each size x size block of normalised coefficients: [blocks, 18]."""
    blocks = split_blocks(coefficients, size)
    alpha, left, right = aggd_fit(blocks.reshape(len(blocks), -1))
    features = [alpha, (left + right) / 2]
    for shift in NEIGHBOUR_SHIFTS:
        # the shift wraps around inside each block, like circshift on the block in MATLAB
        products = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, left, right = aggd_fit(products.reshape(len(blocks), -1))
        mean = (right - left) * gamma(2 / alpha) / gamma(1 / alpha)
        features += [alpha, mean, left, right]
    return np.stack(features, axis=1)


def distance_to_pristine(features, mu_pristine, cov_pristine):
    """NIQE proper: the distance between the Gaussian fitted to the blocks and the pristine one."""
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) == 0:
        raise ValueError("NIQE is undefined: no block has finite features (is the image flat?)")
    mu = np.nanmean(features, axis=0)
    # like MATLAB's nancov: normalised by n - 1, or by n when a single block is left
    cov = np.cov(complete, rowvar=False, ddof=1 if len(complete) > 1 else 0)
    diff = mu_pristine - mu
    return float(np.sqrt(diff @ np.linalg.pinv((cov_pristine + cov) / 2) @ diff))


def niqe(image):
    """NIQE of an HxWx3 RGB (0..255) or HxW grey image, computed as MATLAB's `niqe` does.

    Only whole 96x96 blocks are scored; the right and bottom remainders are dropped.
    """
    luma = as_luma(image)
    rows, cols = luma.shape[0] // BLOCK, luma.shape[1] // BLOCK
    if rows == 0 or cols == 0:
        raise ValueError(f"NIQE needs an image of at least {BLOCK}x{BLOCK} pixels, "
                         f"got {luma.shape[1]}x{luma.shape[0]} (width x height)")
    luma = luma[:rows * BLOCK, :cols * BLOCK]
    mu_pristine, cov_pristine, window = pristine_model()
    half = matlab_imresize_half(luma)
    features = np.hstack([block_features(normalised_coefficients(luma, window), BLOCK),
                          block_features(normalised_coefficients(half, window), BLOCK // 2)])
    return distance_to_pristine(features, mu_pristine, cov_pristine)
