"""EM of a Gaussian mixture per class with a tempered spatial prior, a smooth
multiplicative bias field and an optional mean-field MRF (the SAMSEG / Atropos-with-priors
model), on the voxels of a brain mask.

Model, for voxel ``i`` with intensities ``y_i`` (C channels) and foreground classes
``k`` (each a mixture of G Gaussians ``g``)::

    x_i = b_i * y_i,   b_i = exp(phi_i . c)          (bias field, per channel)
    p(k | i) ∝ prior_ik ** w * exp(beta * sum_{j in N(i)} q_jk)
    p(x_i | k) = sum_g pi_kg N(x_i; mu_kg, Sigma_kg)

E-step: component posteriors ``r_ikg``; M-step: weights, means, covariances; bias step
(from when the mixture has settled without a field, or a third of the iterations):
one Gauss-Newton step of the expected negative log-likelihood in ``c`` (with the
Jacobian of ``x = b y``; per channel, the other channels held fixed), as SPM's unified
segmentation does. The basis ``phi`` is the monomials of the normalised voxel
coordinates of total degree 1..order, centred over the fitted voxels, so the field's
mean log is 0 and the intensity scale stays the scan's. Nothing assumes an order of the
class intensities: each class's Gaussian starts at the statistics of the voxels where the
prior ranks it first.

The arrays here are flat (masked voxels); :mod:`brain_tf.inference.refine` cuts them
from volumes and puts the posteriors back.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

#: Floor added to every foreground prior probability before it is normalised and
#: tempered (a network's hard 0 would otherwise veto a class whatever the intensities).
PRIOR_FLOOR = 1e-4
#: Bias steps taken before the EM may stop on a small change of the posteriors.
MIN_BIAS_STEPS = 5
#: ... and once no bias coefficient moved by more than this in the last step.
BIAS_TOLERANCE = 1e-3
#: Covariances get this share of the data's variance added (a class cannot collapse).
VARIANCE_FLOOR = 1e-4


@dataclasses.dataclass
class Mixture:
    """Gaussian mixture per class: ``weights`` (K, G), ``means`` (K, G, C),
    ``covariances`` (K, G, C, C)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray

    def class_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Each class's mean (K, C) and covariance (K, C, C) over its components."""
        w = self.weights[..., None]
        mean = (w * self.means).sum(axis=1)
        d = self.means - mean[:, None]
        cov = (self.weights[..., None, None]
               * (self.covariances + d[..., :, None] * d[..., None, :])).sum(axis=1)
        return mean, cov

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        """log(pi_kg N(x_i; mu_kg, Sigma_kg)), shape (N, K, G)."""
        n, c = x.shape
        k, g = self.weights.shape
        out = np.empty((n, k, g), dtype=np.float32)
        for a, b in itertools.product(range(k), range(g)):
            chol = np.linalg.cholesky(self.covariances[a, b])
            whiten = np.linalg.inv(chol).T.astype(np.float32)
            z = (x - self.means[a, b].astype(np.float32)) @ whiten
            logdet = 2.0 * np.log(np.diag(chol)).sum()
            out[:, a, b] = (np.log(self.weights[a, b] + 1e-12) - 0.5 * (c * np.log(2 * np.pi)
                            + logdet)) - 0.5 * np.einsum("nc,nc->n", z, z)
        return out

    def precisions(self) -> np.ndarray:
        return np.linalg.inv(self.covariances)


def monomial_powers(order: int) -> list[tuple[int, int, int]]:
    """The exponents of the bias basis' monomials: total degree 1..``order``, in order."""
    return [p for p in itertools.product(range(order + 1), repeat=3) if 0 < sum(p) <= order]


def polynomial_basis(points: np.ndarray, order: int, centre: np.ndarray,
                     half_width: np.ndarray, offsets: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Monomials of the coordinates ``(points - centre) / half_width`` of total degree
    1..``order`` (N, P) float32, minus ``offsets`` (default: their mean over ``points``);
    returns ``(basis, offsets)``."""
    u = ((points - centre) / half_width).astype(np.float32)
    powers = monomial_powers(order)
    basis = np.empty((len(u), len(powers)), dtype=np.float32)
    for j, p in enumerate(powers):
        basis[:, j] = u[:, 0] ** p[0] * u[:, 1] ** p[1] * u[:, 2] ** p[2]
    if offsets is None:
        offsets = basis.mean(axis=0)
    basis -= offsets
    return basis, offsets


def _monomial(u: np.ndarray, powers, derivative) -> np.ndarray:
    """The monomial ``u ** powers`` differentiated once along each axis in ``derivative``."""
    out = np.ones(len(u), dtype=np.float64)
    for axis in range(3):
        p = powers[axis]
        for _ in range(derivative.count(axis)):
            out = out * p
            p -= 1
        if p < 0:
            return np.zeros(len(u))
        out = out * u[:, axis] ** p
    return out


def bending_energy(points: np.ndarray, order: int, centre: np.ndarray,
                   half_width: np.ndarray) -> np.ndarray:
    """(P, P) matrix ``R`` of :func:`polynomial_basis`'s monomials such that ``c @ R @ c``
    is the mean over ``points`` of the field's bending energy, the sum of its squared
    second derivatives in the normalised coordinates (linear fields cost nothing)."""
    u = ((points - centre) / half_width).astype(np.float64)
    powers = monomial_powers(order)
    energy = np.zeros((len(powers), len(powers)))
    for a, b in itertools.combinations_with_replacement(range(3), 2):
        second = np.stack([_monomial(u, p, (a, b)) for p in powers], axis=1)
        energy += (1 if a == b else 2) * second.T @ second / len(u)
    return energy


def tempered_log_prior(prior: np.ndarray, weight: float) -> np.ndarray:
    """``weight * log(prior)`` of foreground probabilities (N, K), floored and normalised."""
    p = prior.astype(np.float32) + PRIOR_FLOOR
    p /= p.sum(axis=1, keepdims=True)
    return weight * np.log(p)


def initial_mixture(x: np.ndarray, prior: np.ndarray, components: int) -> Mixture:
    """Each class's Gaussian from the mean and covariance of ``x`` over the voxels where
    the prior ranks it first (prior-weighted over all voxels for a class that is nowhere
    first); with several components per class, their means spread over -1..1 standard
    deviations along the first channel, each with the class's covariance / components."""
    n, c = x.shape
    k = prior.shape[1]
    w = np.eye(k, dtype=np.float32)[np.argmax(prior, axis=1)]
    empty = w.sum(axis=0) < 2
    w[:, empty] = prior[:, empty]
    w /= np.maximum(w.sum(axis=0), 1e-6)
    means = w.T @ x                                            # (K, C)
    floor = VARIANCE_FLOOR * np.var(x, axis=0).mean() + 1e-12
    covs = np.empty((k, c, c))
    for a in range(k):
        d = x - means[a]
        covs[a] = (w[:, a, None] * d).T @ d + floor * np.eye(c)
    spread = np.linspace(-1, 1, components) if components > 1 else np.zeros(1)
    sd = np.sqrt(covs[:, 0, 0])
    m = np.repeat(means[:, None], components, axis=1).astype(float)
    m[..., 0] += spread[None] * sd[:, None]
    cov = np.repeat(covs[:, None], components, axis=1)
    if components > 1:
        cov = cov / components
    return Mixture(np.full((k, components), 1.0 / components), m, cov)


def update_mixture(x: np.ndarray, r: np.ndarray) -> Mixture:
    """M-step: weights, means and covariances from component posteriors ``r`` (N, K, G)."""
    n, c = x.shape
    k, g = r.shape[1:]
    counts = r.sum(axis=0).astype(float) + 1e-6                  # (K, G)
    flat = r.reshape(n, k * g)
    means = (flat.T @ x).astype(float).reshape(k, g, c) / counts[..., None]
    floor = VARIANCE_FLOOR * np.var(x, axis=0).mean() + 1e-12
    covs = np.empty((k, g, c, c))
    for a, b in itertools.product(range(k), range(g)):
        d = x - means[a, b].astype(np.float32)
        covs[a, b] = (r[:, a, b, None] * d).T @ d / counts[a, b] + floor * np.eye(c)
    weights = counts / counts.sum(axis=1, keepdims=True)
    return Mixture(weights, means, covs)


def bias_step(y: np.ndarray, coefficients: np.ndarray, basis: np.ndarray, r: np.ndarray,
              mixture: Mixture, penalty: np.ndarray | None = None,
              ridge: float = 1e-3) -> np.ndarray:
    """One Gauss-Newton step of the bias coefficients (P, C) given the posteriors; with
    ``penalty`` (P, P), the objective also has ``N / 2 * c @ penalty @ c`` per channel (a
    smoothness prior on the field: :func:`bending_energy` times its strength)."""
    log_b = basis @ coefficients                               # (N, C)
    x = y * np.exp(log_b)
    precision = mixture.precisions().astype(np.float32)       # (K, G, C, C)
    k, g = r.shape[1:]
    new = coefficients.copy()
    for ch in range(y.shape[1]):
        grad = np.zeros(len(y), dtype=np.float32)
        curv = np.zeros(len(y), dtype=np.float32)
        for a, b in itertools.product(range(k), range(g)):
            resid = (x - mixture.means[a, b].astype(np.float32)) @ precision[a, b, ch]
            grad += r[:, a, b] * resid
            curv += r[:, a, b] * precision[a, b, ch, ch]
        grad = grad * x[:, ch] - 1.0
        curv = curv * x[:, ch] ** 2 + 1.0
        hessian = ((basis * curv[:, None]).T @ basis).astype(float)
        gradient = (basis.T @ grad).astype(float)
        if penalty is not None:
            hessian += len(y) * penalty
            gradient += len(y) * penalty @ coefficients[:, ch]
        hessian += ridge * np.trace(hessian) / len(hessian) * np.eye(len(hessian))
        new[:, ch] -= np.linalg.solve(hessian, gradient)
    return new


class Neighbours:
    """Mean-field MRF term on a grid: for the voxels of ``inside`` (a boolean grid, in
    C order), the sum of their 6 face neighbours' class posteriors (0 outside)."""

    def __init__(self, inside: np.ndarray):
        padded = np.pad(inside, 1)
        position = np.full(padded.shape, len(np.flatnonzero(inside)), dtype=np.int32)
        position[padded] = np.arange(position.max(), dtype=np.int32)
        where = np.nonzero(padded)
        self.index = []
        for axis in range(3):
            for step in (-1, 1):
                shifted = list(where)
                shifted[axis] = where[axis] + step
                self.index.append(position[tuple(shifted)])

    def sums(self, q: np.ndarray) -> np.ndarray:
        out = np.empty((q.shape[1], len(q)), dtype=np.float32)
        for k in range(q.shape[1]):  # one class at a time: 1D takes are the fast ones
            column = np.append(q[:, k], np.float32(0))       # the last entry: outside
            np.take(column, self.index[0], out=out[k])
            for index in self.index[1:]:
                out[k] += np.take(column, index)
        return out.T


def posteriors(log_prior, mixture: Mixture, x, mrf: float = 0.0, neighbours=None,
               q=None) -> tuple[np.ndarray, np.ndarray]:
    """E-step: component posteriors (N, K, G) and class posteriors (N, K); the MRF term
    uses the class posteriors ``q`` of the previous pass."""
    logits = mixture.log_likelihood(x) + log_prior[..., None]
    if mrf and neighbours is not None and q is not None:
        logits += mrf * neighbours.sums(q)[..., None]
    n, k, g = logits.shape
    flat = logits.reshape(n, k * g)
    flat -= flat.max(axis=1, keepdims=True)
    np.exp(flat, out=flat)
    flat /= flat.sum(axis=1, keepdims=True)
    r = flat.reshape(n, k, g)
    return r, r.sum(axis=2)


def fit(y, prior, basis, weight: float, components: int, iterations: int,
        mrf: float = 0.0, neighbours=None, bias: bool = True, tolerance: float = 1e-4,
        penalty: np.ndarray | None = None):
    """EM on flat voxels: intensities ``y`` (N, C), foreground priors (N, K), bias basis
    (N, P) (or P = 0) and its smoothness ``penalty`` (P, P; see :func:`bias_step`).
    Returns ``(mixture, coefficients (P, C), q (N, K), iterations)``."""
    log_prior = tempered_log_prior(prior, weight)
    coefficients = np.zeros((basis.shape[1], y.shape[1]))
    x = y
    q = np.exp(log_prior)
    q /= q.sum(axis=1, keepdims=True)
    mixture = initial_mixture(x, prior, components)
    fit_bias = False  # the field starts once the mixture has settled without one
    done = steps = 0
    for done in range(1, iterations + 1):
        r, new_q = posteriors(log_prior, mixture, x, mrf, neighbours, q)
        change = float(np.abs(new_q - q).mean())
        q = new_q
        mixture = update_mixture(x, r)
        if fit_bias:
            new = bias_step(y, coefficients, basis, r, mixture, penalty)
            moved = float(np.abs(new - coefficients).max())
            coefficients = new
            x = (y * np.exp(basis @ coefficients)).astype(np.float32)
            steps += 1
        elif bias and basis.shape[1] and (change < 10 * tolerance or done >= iterations // 3):
            fit_bias = True
            continue
        if change < tolerance and (not fit_bias or (steps >= MIN_BIAS_STEPS
                                                    and moved < BIAS_TOLERANCE)):
            break
    return mixture, coefficients, q, done
