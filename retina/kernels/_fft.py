"""FFT correlations written once for any array module (NumPy + scipy.fft, CuPy + cupyx.scipy.fft).

Each function takes ``xp`` (the array module) and ``fft`` (a module with
``rfftn``/``irfftn``/``rfft2``/``irfft2``/``rfft``/``irfft``/``fft``/``ifft`` in the ``scipy.fft`` signature) and a
dict ``kw`` of extra keywords for the transforms (``workers`` on the CPU).  The
backends bind them (``retina.kernels.cpu``, ``retina.kernels.gpu``), so the
CPU tests exercise the same algorithm the GPU runs (the per-frequency channel
product, :func:`_mix`, may be a backend's own loop: :data:`MIXERS`; the tests
check the generic one too).
"""

from __future__ import annotations

import scipy.fft as _sfft


def fft_shape(t, h, w):
    """FFT shape of a movie block: a fast length in time, the frame as is (circular in space is exact)."""
    return (_sfft.next_fast_len(t, real=True), h, w)


def corr3d_movie_fft(xp, fft, kw, x, w, out, chunk, cache, spectra, parallel=None, kw_each=None):
    """Layer 1 of a movie in chunks of ``chunk`` windows (see the CPU twin for the maths).

    Where the backend sets :data:`BLOCK`, each chunk's channels are transformed one at a time; ``parallel(n,
    fn)``, if given, calls ``fn(lo, hi)`` over chunks of the ``n`` channels on threads, each channel's
    inverse transforms then taking ``kw_each`` (single-threaded on the CPU: 1.2x faster than every transform
    on two threads).
    """
    t_n, h, wd = x.shape
    c_n, k_n, kh, kwd = w.shape
    n_win, ho, wo = out.shape[0], out.shape[2], out.shape[3]
    step = max(int(chunk), 1)
    spec_cache = {} if cache is None else cache
    for n0 in range(0, n_win, step):
        nb = min(step, n_win - n0)
        shape = fft_shape(nb + k_n - 1, h, wd)
        wspec = _kernel_spectrum(xp, fft, kw, w, shape, spec_cache)
        xs = fft.rfftn(x[n0:n0 + nb + k_n - 1], s=shape, axes=(0, 1, 2), **kw)
        if spectra is not None:
            spectra.append(xs)
        if xp in BLOCK:   # one channel at a time: its product and inverse stay in cache (1.8x faster on the CPU)
            _chunk_channels(xp, fft, kw, xs, wspec, out[n0:n0 + nb], shape, parallel, kw_each)
        else:
            out[n0:n0 + nb] = _irfftn_head(fft, kw, wspec * xs[None], shape, (nb, ho, wo)).transpose(1, 0, 2, 3)
    return out


def _chunk_channels(xp, fft, kw, xs, wspec, out, shape, parallel=None, kw_each=None):
    """One chunk's layer 1, channel by channel: each channel's product with the movie spectrum ``xs`` and its
    cropped inverse into ``out[:, c]`` (the channels spread over ``parallel``'s threads where given)."""
    keep = (out.shape[0], out.shape[2], out.shape[3])

    def channels(lo, hi, kw_c):
        prod = xp.empty_like(xs)   # one buffer for these channels' products, transformed in place
        for c in range(lo, hi):
            xp.multiply(wspec[c], xs, out=prod)
            out[:, c] = _irfftn_head(fft, kw_c, prod, shape, keep, overwrite=True)

    _spread(wspec.shape[0], channels, kw, parallel, kw_each)


def _spread(n, fn, kw, parallel=None, kw_each=None):
    """``fn(lo, hi, kw_c)`` over ``range(n)``: here in one call with the transforms' keywords ``kw``, or in pieces
    over ``parallel``'s threads with ``kw_each`` (``kw`` where not given)."""
    if parallel is None:
        fn(0, n, kw)
    else:
        each = kw if kw_each is None else kw_each
        parallel(n, lambda lo, hi: fn(lo, hi, each))


def _kernel_spectrum(xp, fft, kw, w, shape, cache):
    """The conjugate spectrum of the kernels ``w`` at FFT ``shape``, kept in ``cache``.

    One axis at a time, each padded by its own transform, the real axis first: the kernels (40x15x15) are
    much smaller than the block (90x50x50 in training, 576x50x50 in the forward), so the first two passes
    run on far fewer lines than a transform of the zero-padded block (4.6 against 6.6 ms for a training
    step's, 19 against 42 ms for the forward's; same values to rounding).
    """
    if shape not in cache:
        r = fft.rfft(w, n=shape[2], axis=-1, **kw)
        r = fft.fft(r, n=shape[1], axis=-2, **kw)
        cache[shape] = xp.conj(fft.fft(r, n=shape[0], axis=-3, **kw))
    return cache[shape]


def corr3d_runs_fft(xp, fft, kw, xs, w, outs, cache, spectra, parallel=None, kw_each=None):
    """Layer 1 of several runs: movie ``xs[j]`` into ``outs[j]``, each run one chunk (a training batch).

    ``parallel(n, fn)`` calls ``fn(lo, hi)`` over chunks of ``range(n)`` runs, on threads where the backend
    has them (the CPU: each run's transforms single-threaded, so its spectra stay in one core's cache; 1.6x
    faster than every transform on two threads for ten 89-frame runs), each run's transforms taking ``kw_each``;
    None runs them in order.  The kernel spectra are made here first (with ``kw``), so the runs only read
    ``cache``.  ``spectra`` receives each run's movie spectrum in run order.
    """
    cache = {} if cache is None else cache
    for x in xs:
        _kernel_spectrum(xp, fft, kw, w, fft_shape(*x.shape), cache)
    found: list = [None] * len(xs)

    def some(lo, hi, kw_c):
        for j in range(lo, hi):
            own: list | None = [] if spectra is not None else None
            corr3d_movie_fft(xp, fft, kw_c, xs[j], w, outs[j], max(outs[j].shape[0], 1), cache, own)
            if own:
                found[j] = own[0]

    _spread(len(xs), some, kw, parallel, kw_each)
    if spectra is not None:
        spectra.extend(found)
    return outs


def corr3d_movie_transpose_fft(xp, fft, kw, g, w, out):
    n_win, c_n, ho, wo = g.shape
    k_n = w.shape[1]
    t_n, h, wd = out.shape
    shape = fft_shape(n_win + k_n - 1, h, wd)
    gs = fft.rfftn(g.transpose(1, 0, 2, 3), s=shape, axes=(1, 2, 3), **kw)
    ws = fft.rfftn(w, s=shape, axes=(1, 2, 3), **kw)
    full = fft.irfftn((gs * ws).sum(axis=0), s=shape, axes=(0, 1, 2), **kw)
    out[:] = full[:t_n, :h, :wd]
    return out


def corr3d_movie_weight_grad_fft(xp, fft, kw, x, g, out, spectrum):
    return corr3d_runs_weight_grad_fft(xp, fft, kw, [x], [g], out, None if spectrum is None else [spectrum])


RUNS_PER_PIECE = 2
"""Runs per piece of :func:`corr3d_runs_weight_grad_fft`: each piece sums its runs' spectral products into its
own buffer, and the pieces' sums are added in piece order, so the result does not depend on the thread count."""


def _gradient_spectrum(fft, kw, g, shape):
    """The spectrum at FFT ``shape`` of window gradients ``g`` ``(N, C, h, w)``, channels first: one axis at a
    time, the real axis first, each padded by its own transform (the 36x36 frames padded to 50x50 are
    transformed on 36 rows, not 50; a ten-run batch's layer-1 weight gradient 71 -> 52 ms with the runs on
    two threads, 2-core EPYC)."""
    r = fft.rfft(g.transpose(1, 0, 2, 3), n=shape[2], axis=-1, **kw)
    r = fft.fft(r, n=shape[1], axis=-2, overwrite_x=True, **kw)
    return fft.fft(r, n=shape[0], axis=-3, overwrite_x=True, **kw)


def corr3d_runs_weight_grad_fft(xp, fft, kw, xs, gs, out, spectra, parallel=None, kw_each=None):
    """The weight gradient summed over several runs (movie ``xs[j]``, window gradients ``gs[j]``).

    The products of the runs' spectra are summed before one inverse
    transform per FFT shape (training draws runs of one length: one inverse
    per batch instead of one per run).  Each product is taken as
    ``conj(movie) * window gradient`` (the conjugate of the one wanted; the
    sum is conjugated once), so only the one-channel movie spectrum is
    conjugated per run, not the eight-channel gradient spectrum.  The runs
    go in pieces of :data:`RUNS_PER_PIECE` over ``parallel``'s threads
    where given (each piece's transforms taking ``kw_each``).
    """
    c_n, k_n, kh, kwd = out.shape
    pieces = [range(a, min(a + RUNS_PER_PIECE, len(xs))) for a in range(0, len(xs), RUNS_PER_PIECE)]
    sums: list = [None] * len(pieces)

    def some(lo, hi, kw_c):
        for i in range(lo, hi):
            acc: dict = {}
            for j in pieces[i]:
                shape = fft_shape(*xs[j].shape)
                xspec = fft.rfftn(xs[j], s=shape, axes=(0, 1, 2), **kw_c) if spectra is None else spectra[j]
                gspec = _gradient_spectrum(fft, kw_c, gs[j], shape)
                gspec *= xp.conj(xspec)[None]
                _add_to(acc, shape, gspec)
            sums[i] = acc

    _spread(len(pieces), some, kw, parallel, kw_each)
    total: dict = {}
    for acc in sums:
        for shape, spec in acc.items():
            _add_to(total, shape, spec)
    out[:] = 0
    for shape, spec in total.items():
        out += _irfftn_head(fft, kw, xp.conj(spec, out=spec), shape, (k_n, kh, kwd))
    return out


def _add_to(sums, key, spec):
    """``sums[key] += spec``, the first ``spec`` of a key kept as its sum (it is added into in place)."""
    if key in sums:
        sums[key] += spec
    else:
        sums[key] = spec


def _irfftn_head(fft, kw, spec, shape, keep, overwrite=False):
    """``irfftn(spec, s=shape)`` over the last three axes, only its leading ``keep`` block.

    One axis at a time, cropping after each, the real transform last: the layer-1 correlation keeps 512x36x36
    of a 576x50x50 block, the weight gradient 40x15x15 of 90x50x50.  Of the two complex axes the one cropped
    harder goes first (rows before time in both cases), so the other runs on less data: ~20 % faster than time
    first, which was itself ~30 % faster than the full inverse (same values to rounding).  ``overwrite``: the
    first transform may work in ``spec`` itself (a scratch buffer the caller reuses).
    """
    first, second = (-2, -3) if keep[1] / shape[1] <= keep[0] / shape[0] else (-3, -2)
    r = spec
    for axis in (first, second):
        r = fft.ifft(r, axis=axis, overwrite_x=overwrite and axis == first, **kw)
        r = r[..., :keep[0], :, :] if axis == -3 else r[..., :keep[1], :]
    return fft.irfft(r, n=shape[2], axis=-1, **kw)[..., :keep[2]]


def _irfft2_head(fft, kw, spec, n_last, keep):
    """``irfft2(spec, s=(H, n_last))`` over the last two axes, only its leading ``keep`` block: rows first,
    cropped, then the real transform of the kept rows (layer 2 keeps 26 of 36 rows)."""
    r = fft.ifft(spec, axis=-2, **kw)[..., :keep[0], :]
    return fft.irfft(r, n=n_last, axis=-1, **kw)[..., :keep[1]]


BLOCK: dict = {}
"""Windows per block of the layer-2 transforms, per array module, and whether layer 1 goes one channel at a time
(the CPU registers 64 in :mod:`retina.kernels.cpu`: each block's spectra, products and inverses stay in cache,
~25 % faster for layer 2 and 1.8x for layer 1, and the blocks go to the threads; a module not listed transforms
the whole batch at once)."""

MIXERS: dict = {}
"""A backend's own channel product for its array module, ``MIXERS[xp](a, b, a_t, b_t, out, threads)``, used by
:func:`_mix` instead of the batched matmul (the CPU registers a Numba loop, :func:`retina.kernels.cpu._mix_spectra`)."""


def _mix(xp, a, b, *, a_t=False, b_t=False, threads=None):
    """Per-frequency channel product of two spectra ``(P, Q, h, w)``: ``a @ b`` over the middle axes.

    ``a`` is read as ``(P, Q)`` (``(Q, P)`` with ``a_t``) and ``b`` as ``(Q, R)``
    (``(R, Q)`` with ``b_t``) at each frequency; the result is ``(P, R, h, w)``.
    One batched matmul over the frequencies (BLAS on the CPU, cuBLAS on the
    GPU): ~2.5x faster than ``einsum`` for the 8x8 channel products here.  ``threads``: a cap for a
    backend's own mixer (1 inside a block that already runs on its own thread).
    """
    h, w = a.shape[2], a.shape[3]
    mixer = MIXERS.get(xp)
    if mixer is not None:
        shape = (a.shape[1] if a_t else a.shape[0], b.shape[0] if b_t else b.shape[1], h, w)
        return mixer(xp.ascontiguousarray(a), xp.ascontiguousarray(b), a_t, b_t,
                     xp.empty(shape, dtype=xp.result_type(a, b)), threads)
    am = a.reshape(a.shape[0], a.shape[1], h * w).transpose(2, 1, 0) if a_t else \
        a.reshape(a.shape[0], a.shape[1], h * w).transpose(2, 0, 1)
    bm = b.reshape(b.shape[0], b.shape[1], h * w).transpose(2, 1, 0) if b_t else \
        b.reshape(b.shape[0], b.shape[1], h * w).transpose(2, 0, 1)
    prod = xp.matmul(am, bm)                       # (h*w, P, R)
    return prod.transpose(1, 2, 0).reshape(prod.shape[1], prod.shape[2], h, w)


def _blocks(xp, n):
    """Slices of the batch axis, :data:`BLOCK` windows each (the whole batch where the backend sets none)."""
    size = BLOCK.get(xp) or n
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


def _gather(xp, parts):
    """The spectra handed on to the weight gradient: the batch's one block, or the list of the blocks' spectra in
    block order (joining them into one array cost a copy of every spectrum: ~4 % of a training step)."""
    return parts[0] if len(parts) == 1 else parts


def _block_of(spectrum, i, sl):
    """Block ``i`` (slice ``sl`` of the batch) of a spectrum from :func:`_gather`."""
    return spectrum[i] if isinstance(spectrum, list) else spectrum[sl]


def _each_block(xp, n, fn, kw, parallel=None, kw_each=None):
    """``fn(i, sl, kw_c, mix_threads)`` for every block ``i`` (slice ``sl``) of a batch of ``n``; returns the
    number of blocks.  In order here, or over ``parallel``'s threads with ``kw_each`` for the transforms and
    one thread for the channel product (:func:`_mix`) inside each block."""
    blocks = _blocks(xp, n)
    spread = parallel if len(blocks) > 1 else None

    def some(lo, hi, kw_c):
        for i in range(lo, hi):
            fn(i, blocks[i], kw_c, None if spread is None else 1)

    _spread(len(blocks), some, kw, spread, kw_each)
    return len(blocks)


def corr2d_fft(xp, fft, kw, x, w, out, spectra=None, parallel=None, kw_each=None):
    h, wd = x.shape[2], x.shape[3]
    ho, wo = out.shape[2], out.shape[3]
    ws = xp.conj(fft.rfft2(w, s=(h, wd), **kw))
    parts: dict = {}

    def block(i, sl, kw_c, mix_threads):
        xs = fft.rfft2(x[sl], s=(h, wd), **kw_c)
        if spectra is not None:
            parts[i] = xs
        out[sl] = _irfft2_head(fft, kw_c, _mix(xp, xs, ws, b_t=True, threads=mix_threads), wd, (ho, wo))

    n_blocks = _each_block(xp, x.shape[0], block, kw, parallel, kw_each)
    if spectra is not None:
        spectra.append(_gather(xp, [parts[i] for i in range(n_blocks)]))
    return out


def corr2d_transpose_fft(xp, fft, kw, g, w, out, spectra=None, parallel=None, kw_each=None):
    h, wd = out.shape[2], out.shape[3]
    ws = fft.rfft2(w, s=(h, wd), **kw)
    parts: dict = {}

    def block(i, sl, kw_c, mix_threads):
        gs = fft.rfft2(g[sl], s=(h, wd), **kw_c)
        if spectra is not None:
            parts[i] = gs
        out[sl] = fft.irfft2(_mix(xp, gs, ws, threads=mix_threads), s=(h, wd), **kw_c)

    n_blocks = _each_block(xp, g.shape[0], block, kw, parallel, kw_each)
    if spectra is not None:
        spectra.append(_gather(xp, [parts[i] for i in range(n_blocks)]))
    return out


def corr2d_weight_grad_fft(xp, fft, kw, x, g, out, spectrum=None, g_spectrum=None, parallel=None, kw_each=None):
    """The blocks' products are summed in block order whatever runs them, so the result does not depend on the
    thread count."""
    h, wd = x.shape[2], x.shape[3]
    kh, kwd = out.shape[2], out.shape[3]
    prods: dict = {}

    def block(i, sl, kw_c, mix_threads):
        xs = fft.rfft2(x[sl], s=(h, wd), **kw_c) if spectrum is None else _block_of(spectrum, i, sl)
        gs = xp.conj(fft.rfft2(g[sl], s=(h, wd), **kw_c) if g_spectrum is None else _block_of(g_spectrum, i, sl))
        prods[i] = _mix(xp, gs, xs, a_t=True, threads=mix_threads)

    n_blocks = _each_block(xp, x.shape[0], block, kw, parallel, kw_each)
    acc = prods[0]
    for i in range(1, n_blocks):
        acc += prods[i]
    out[:] = _irfft2_head(fft, kw, acc, wd, (kh, kwd))
    return out
