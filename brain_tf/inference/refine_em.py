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

With ``partial_volume``, each pair of classes with no third class between their means
(:func:`partial_volume_pairs`) also gets a mixed class for voxels that hold both tissues:
fractions f = 1/8, 3/8, 5/8, 7/8 of the first, each a Gaussian of mean f mu_a + (1 - f)
mu_b and covariance f^2 Sigma_a + (1 - f)^2 Sigma_b (the mixed-tissue model of partial-
volume classifiers, a uniform fraction in four steps), with the geometric mean of the two
classes' tempered priors. The pure Gaussians are fitted to the pure posteriors only; a
voxel's class posteriors are then its expected fractions (a mixed voxel's counts f to one
class, 1 - f to the other), which the MRF and the hard labels read.

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
#: Fractions of the first class in a partial-volume class (uniform over 0..1, no tie).
PV_FRACTIONS = (0.125, 0.375, 0.625, 0.875)
#: A pair gets no partial-volume class when a third class lies between them, within this
#: many pooled standard deviations of the line between their means (the mix would imitate
#: that class: CSF / WM voxels look like GM on a T1).
PV_CLEARANCE = 3.0
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
            mean = self.means[a, b].astype(np.float32)
            if c == 1:  # a scan of one channel: no matrix product
                z2 = np.square((x[:, 0] - mean[0]) * whiten[0, 0])
            else:
                z = (x - mean) @ whiten
                z2 = np.einsum("nc,nc->n", z, z)
            logdet = 2.0 * np.log(np.diag(chol)).sum()
            out[:, a, b] = (np.log(self.weights[a, b] + 1e-12) - 0.5 * (c * np.log(2 * np.pi)
                            + logdet)) - 0.5 * z2
        return out

    def precisions(self) -> np.ndarray:
        return np.linalg.inv(self.covariances)


def partial_volume_pairs(mixture: Mixture) -> list[tuple[int, int]]:
    """The class pairs that get a mixed class: those with no third class between them (its
    mean projects inside the segment between theirs and lies within
    :data:`PV_CLEARANCE` pooled standard deviations of the line; with one channel, any
    class whose mean lies between)."""
    means, covs = mixture.class_moments()
    pairs = []
    for a, b in itertools.combinations(range(len(means)), 2):
        precision = np.linalg.inv((covs[a] + covs[b]) / 2)
        d = means[a] - means[b]
        between = False
        for c in set(range(len(means))) - {a, b}:
            e = means[c] - means[b]
            f = (d @ precision @ e) / max(d @ precision @ d, 1e-12)
            r = e - f * d
            between |= 0 < f < 1 and float(np.sqrt(r @ precision @ r)) < PV_CLEARANCE
        if not between:
            pairs.append((a, b))
    return pairs


@dataclasses.dataclass
class Composition:
    """The model's components in one flat list, the pure classes' (K x G, class by class)
    then the mixed classes' (:data:`PV_FRACTIONS` each, pair by pair): ``share`` (K, M) is
    the fraction of pure class ``a`` in component ``m``, ``owner`` (M,) the class (pure,
    then mixed) whose prior component ``m`` takes, ``pairs`` the mixed classes' pure
    classes."""

    share: np.ndarray
    owner: np.ndarray
    pairs: list[tuple[int, int]]

    @classmethod
    def of(cls, k: int, g: int, pairs=()) -> "Composition":
        n = len(PV_FRACTIONS)
        share = np.zeros((k, k * g + n * len(pairs)), dtype=np.float32)
        owner = np.concatenate([np.repeat(np.arange(k), g),
                                np.repeat(np.arange(k, k + len(pairs)), n)])
        for a in range(k):
            share[a, a * g:(a + 1) * g] = 1.0
        for m, (a, b) in enumerate(pairs):
            columns = slice(k * g + m * n, k * g + (m + 1) * n)
            share[a, columns] = PV_FRACTIONS
            share[b, columns] = 1 - np.asarray(PV_FRACTIONS)
        return cls(share, owner, list(pairs))

    def expand(self, mixture: Mixture) -> Mixture:
        """Every component as one mixture of shape (1, M): the pure classes' as fitted,
        the mixed classes' from the pure classes' moments."""
        k, g = mixture.weights.shape
        c = mixture.means.shape[2]
        weights = [mixture.weights.ravel()]
        means = [mixture.means.reshape(-1, c)]
        covs = [mixture.covariances.reshape(-1, c, c)]
        mu, sigma = mixture.class_moments()
        f = np.asarray(PV_FRACTIONS)[:, None]
        for a, b in self.pairs:
            weights.append(np.full(len(f), 1.0 / len(f)))
            means.append(f * mu[a] + (1 - f) * mu[b])
            covs.append(f[..., None]**2 * sigma[a] + (1 - f[..., None])**2 * sigma[b])
        return Mixture(np.concatenate(weights)[None], np.concatenate(means)[None],
                       np.concatenate(covs)[None])

    def log_prior(self, log_prior: np.ndarray) -> np.ndarray:
        """Each component's log prior (N, 1, M) from the pure classes' (N, K): its
        class's, or for a mixed class the mean of its two classes'."""
        if self.pairs:
            mixed = [(log_prior[:, a] + log_prior[:, b]) / 2 for a, b in self.pairs]
            log_prior = np.concatenate([log_prior, np.stack(mixed, axis=1)], axis=1)
        return log_prior[:, None, self.owner]

    def fractions(self, r: np.ndarray) -> np.ndarray:
        """Expected pure-class fractions (N, K) of component posteriors ``r`` (N, 1, M)."""
        return r.reshape(len(r), -1) @ self.share.T

    def pure(self, r: np.ndarray, k: int, g: int) -> np.ndarray:
        """The pure classes' component posteriors (N, K, G) of ``r`` (N, 1, M)."""
        return r.reshape(len(r), -1)[:, :k * g].reshape(len(r), k, g)


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
    c = y.shape[1]
    precision = mixture.precisions().reshape(-1, c, c)          # (K G, C, C)
    means = mixture.means.reshape(-1, c)
    flat = r.reshape(len(r), -1)                                # (N, K G)
    new = coefficients.copy()
    for ch in range(c):
        # sum over components of r (x - mu) . P[ch] and of r P[ch, ch], as matrix products
        row = precision[:, ch, :]                                    # (K G, C)
        grad = (np.einsum("nc,nc->n", x, flat @ row.astype(np.float32))
                - flat @ np.einsum("mc,mc->m", means, row).astype(np.float32))
        curv = flat @ precision[:, ch, ch].astype(np.float32)
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


def posteriors(joint, composition: Composition, mrf: float = 0.0, neighbours=None,
               q=None) -> tuple[np.ndarray, np.ndarray]:
    """E-step from ``joint`` (N, 1, M), log(prior x likelihood) of every component (left
    unchanged): component posteriors (N, 1, M) and class posteriors (N, K); the MRF term
    adds each component's share of the classes' neighbour sums of ``q``, the class
    posteriors of the previous pass."""
    if mrf and neighbours is not None and q is not None:
        logits = joint + mrf * (neighbours.sums(q) @ composition.share)[:, None]
    else:
        logits = joint.copy()
    flat = logits.reshape(len(logits), -1)
    flat -= flat.max(axis=1, keepdims=True)
    np.exp(flat, out=flat)
    flat /= flat.sum(axis=1, keepdims=True)
    r = flat.reshape(logits.shape)
    return r, composition.fractions(r)


def fit(y, prior, basis, weight: float, components: int, iterations: int,
        mrf: float = 0.0, neighbours=None, bias: bool = True, tolerance: float = 1e-4,
        penalty: np.ndarray | None = None, partial_volume: bool = False):
    """EM on flat voxels: intensities ``y`` (N, C), foreground priors (N, K), bias basis
    (N, P) (or P = 0) and its smoothness ``penalty`` (P, P; see :func:`bias_step`); with
    ``partial_volume``, mixed classes (the pairs chosen from the starting mixture).
    Returns ``(mixture, coefficients (P, C), q (N, K), iterations, composition)``: the
    pure classes' mixture, and how to expand it (:meth:`Composition.expand`)."""
    k = prior.shape[1]
    coefficients = np.zeros((basis.shape[1], y.shape[1]))
    x = y
    mixture = initial_mixture(x, prior, components)
    composition = Composition.of(k, components,
                                 partial_volume_pairs(mixture) if partial_volume else ())
    pure_log_prior = tempered_log_prior(prior, weight)
    log_prior = composition.log_prior(pure_log_prior)
    q = np.exp(pure_log_prior)
    q /= q.sum(axis=1, keepdims=True)
    fit_bias = False  # the field starts once the mixture has settled without one
    done = steps = 0
    for done in range(1, iterations + 1):
        joint = composition.expand(mixture).log_likelihood(x) + log_prior
        r, new_q = posteriors(joint, composition, mrf, neighbours, q)
        change = float(np.abs(new_q - q).mean())
        q = new_q
        mixture = update_mixture(x, composition.pure(r, k, components))
        if fit_bias:
            new = bias_step(y, coefficients, basis, r, composition.expand(mixture), penalty)
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
    return mixture, coefficients, q, done, composition
