"""The per-example kernels of Hogwild! (``protocols.hogwild``) and the few atomics they need.

Each kernel runs one worker's share of an epoch without the GIL. Workers
claim chunks of the epoch's example order from a shared cursor (an atomic
fetch-and-add), so a worker slowed down by other load on the machine does
not leave the rest idle at the end of the epoch. One worker walks the order
front to back: plain sequential SGD.

numba has no CPU atomics, so the four used here are LLVM instructions
emitted through ``numba.extending.intrinsic``: compare-and-swap (taking a
lock), an atomic add (the cursor), and acquire loads / release stores (the
write stamps, releasing a lock). On x86 the loads and stores are plain
moves; the orderings only stop the compiler from caching or reordering them.
Parameter reads and writes stay plain, non-atomic loads and stores, as in
the paper's code.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

LOGISTIC, HINGE = 0, 1  # loss codes of sparse_epoch / sparse_scores
SPINS_BEFORE_YIELD = 1000  # a lock holder preempted by other load gets the core back


# -- atomics -----------------------------------------------------------------------
def _pointer(context, builder, sig, args):
    """The address of ``array[index]`` and the array's element type, for an intrinsic called as
    ``f(array, index, ...)``; ``index`` is an integer, or a tuple of them for a 2-D array."""
    array_type, index_type = sig.args[0], sig.args[1]
    view = context.make_array(array_type)(context, builder, args[0])
    if isinstance(index_type, types.BaseTuple):
        index_types, indices = index_type.types, cgutils.unpack_tuple(builder, args[1], len(index_type))
    else:
        index_types, indices = (index_type,), (args[1],)
    indices = [context.cast(builder, i, t, types.intp) for i, t in zip(indices, index_types)]
    return cgutils.get_item_pointer(context, builder, array_type, view, indices), array_type.dtype


@intrinsic
def _compare_and_swap(typingctx, array, index, expected, desired):
    """``old = array[index]; if old == expected: array[index] = desired; return old``, atomically (acquire)."""
    def codegen(context, builder, sig, args):
        ptr, dtype = _pointer(context, builder, sig, args)
        expected_value = context.cast(builder, args[2], sig.args[2], dtype)
        desired_value = context.cast(builder, args[3], sig.args[3], dtype)
        pair = builder.cmpxchg(ptr, expected_value, desired_value, "acquire", "monotonic")
        return builder.extract_value(pair, 0)
    return array.dtype(array, index, expected, desired), codegen


@intrinsic
def _fetch_add(typingctx, array, index, value):
    """``old = array[index]; array[index] += value; return old``, atomically."""
    def codegen(context, builder, sig, args):
        ptr, dtype = _pointer(context, builder, sig, args)
        return builder.atomic_rmw("add", ptr, context.cast(builder, args[2], sig.args[2], dtype), "monotonic")
    return array.dtype(array, index, value), codegen


@intrinsic
def _load_acquire(typingctx, array, index):
    def codegen(context, builder, sig, args):
        ptr, dtype = _pointer(context, builder, sig, args)
        return builder.load_atomic(ptr, "acquire", dtype.bitwidth // 8)
    return array.dtype(array, index), codegen


@intrinsic
def _store_release(typingctx, array, index, value):
    def codegen(context, builder, sig, args):
        ptr, dtype = _pointer(context, builder, sig, args)
        builder.store_atomic(context.cast(builder, args[2], sig.args[2], dtype), ptr, "release", dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(array, index, value), codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Ask the cache for ``array[index]`` ahead of its use (LLVM's prefetch hint; never faults)."""
    def codegen(context, builder, sig, args):
        ptr, _ = _pointer(context, builder, sig, args)
        bytes_ptr = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [bytes_ptr, int32, int32, int32]), "llvm.prefetch.p0")
        # read, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(ptr, bytes_ptr), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()
    return types.none(array, index), codegen


@intrinsic
def _sched_yield(typingctx):
    """POSIX ``sched_yield()``: give the core to another runnable thread."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()
    return types.none(), codegen


@njit(nogil=True, cache=True)
def _lock(locks, i):
    """Spin until this worker holds ``locks[i]`` (0 free, 1 held)."""
    spins = 0
    while _compare_and_swap(locks, i, 0, 1) != 0:
        spins += 1
        if spins == SPINS_BEFORE_YIELD:
            _sched_yield()
            spins = 0


@njit(nogil=True, cache=True)
def _unlock(locks, i):
    _store_release(locks, i, 0)


@njit(nogil=True, cache=True)
def _claim(cursor, chunk, n):
    """The next ``[first, last)`` of the epoch's order, or an empty range when it is used up."""
    first = min(_fetch_add(cursor, 0, chunk), n)
    return first, min(first + chunk, n)


# -- prefetching ---------------------------------------------------------------------------
# In a shuffled order each example's data sit at a random place in memory, and so do its
# coordinates: one example is a chain of cache misses (row pointer -> feature ids ->
# parameters). So the kernels ask for the pieces of later examples while they compute this
# one, each link of the chain a few examples apart, so that by the time a link is followed
# it is already in the cache. On the benchmark's problem (1M features, 1M examples) one
# thread went from about 0.9M to 2.7M examples/s.
FAR, NEAR, NEXT = 32, 16, 4  # examples ahead: row pointers, then ids and values, then coordinates


@njit(nogil=True, cache=True)
def _prefetch_sparse(j, order, offsets, indices, values, labels, w, stamps, locks, locked):
    n = order.size
    if j + FAR < n:
        _prefetch(offsets, order[j + FAR])
    if j + NEAR < n:
        ahead = order[j + NEAR]
        if offsets[ahead + 1] > offsets[ahead]:
            for k in (offsets[ahead], offsets[ahead + 1] - 1):  # a row may straddle two cache lines
                _prefetch(indices, k)
                _prefetch(values, k)
        _prefetch(labels, ahead)
    if j + NEXT < n:
        ahead = order[j + NEXT]
        for k in range(offsets[ahead], offsets[ahead + 1]):
            _prefetch(w, indices[k])
            _prefetch(stamps, indices[k])
            if locked:
                _prefetch(locks, indices[k])


@njit(nogil=True, cache=True)
def _prefetch_ratings(j, order, user, item, users, items, user_stamps, item_stamps, user_locks, item_locks, locked):
    n = order.size
    if j + NEAR < n:
        ahead = order[j + NEAR]
        _prefetch(user, ahead)
        _prefetch(item, ahead)
    if j + NEXT < n:
        ahead = order[j + NEXT]
        u, v = user[ahead], item[ahead]
        _prefetch(users, (u, 0))
        _prefetch(items, (v, 0))
        _prefetch(user_stamps, u)
        _prefetch(item_stamps, v)
        if locked:
            _prefetch(user_locks, u)
            _prefetch(item_locks, v)


# -- sparse linear classification (the paper's SVM; logistic regression) ---------------
@njit(nogil=True, cache=True, error_model="numpy")
def sparse_epoch(w, reg, stamps, locks, cursor, order, chunk, indices, offsets, values, labels, width,
                 step, loss, worker, workers, locked):
    r"""One worker's share of an epoch of per-example SGD on a sparse linear model.

    For example :math:`e` (feature ids ``indices[offsets[i]:offsets[i+1]]``,
    sorted and distinct) with label :math:`y \in \{0, 1\}`::

        read  x_e, and the write stamps of e
        z = sum_{v in e} x_v a_v;  g = dloss/dz
        for v in e:  x_v <- x_v - step * (g a_v + reg_v * xhat_v)      # xhat: the value read

    ``reg`` is :math:`\lambda N / d_v` per feature (empty: no penalty).
    ``locked``: hold the locks of every feature of :math:`e` from the read
    to the write (taken in increasing id order, so no deadlock). Returns
    ``(updates, collisions)``: a collision is an update that found, at its
    write, a stamp of :math:`e` changed since its read.
    """
    n = order.size
    dtype = w.dtype.type
    one = dtype(1.0)
    read = np.empty(width, dtype=w.dtype)  # width: the longest example
    seen = np.empty(width, dtype=stamps.dtype)
    has_reg = reg.size > 0
    updates = 0
    collisions = 0
    first, last = _claim(cursor, chunk, n)
    while first < last:
        for j in range(first, last):
            _prefetch_sparse(j, order, offsets, indices, values, labels, w, stamps, locks, locked)
            i = order[j]
            start, stop = offsets[i], offsets[i + 1]
            if locked:
                for k in range(start, stop):
                    _lock(locks, indices[k])
            z = dtype(0.0)
            for k in range(start, stop):
                v = indices[k]
                seen[k - start] = _load_acquire(stamps, v)
                read[k - start] = w[v]
                z += read[k - start] * values[k]
            if loss == LOGISTIC:
                g = one / (one + np.exp(-z)) - labels[i]
            else:
                sign = dtype(2.0) * labels[i] - one
                g = -sign if sign * z < one else dtype(0.0)
            token = stamps.dtype.type(updates * workers + worker + 1)  # no other update of these 2^32 has it
            collided = False
            for k in range(start, stop):
                v = indices[k]
                collided |= _load_acquire(stamps, v) != seen[k - start]
                grad = g * values[k]
                if has_reg:
                    grad += reg[v] * read[k - start]
                w[v] = w[v] - step * grad
                _store_release(stamps, v, token)
            if locked:
                for k in range(start, stop):
                    _unlock(locks, indices[k])
            collisions += collided
            updates += 1
        first, last = _claim(cursor, chunk, n)
    return updates, collisions


# -- matrix factorization (the paper's matrix completion) ---------------------------------
@njit(nogil=True, cache=True, error_model="numpy")
def ratings_epoch(users, items, user_reg, item_reg, user_stamps, item_stamps, user_locks, item_locks,
                  cursor, order, chunk, user, item, rating, step, worker, workers, locked):
    r"""One worker's share of an epoch of per-rating SGD on :math:`r_{uv} \approx \langle L_u, R_v \rangle`.

    For the rating :math:`(u, v, r)`, the edge :math:`e` is the two rows
    :math:`L_u` and :math:`R_v`::

        read  L_u, R_v (as p, q), and their write stamps
        g = 2 (<p, q> - r)
        L_u <- L_u - step * (g q + user_reg_u p);   R_v <- R_v - step * (g p + item_reg_v q)

    ``user_reg``/``item_reg`` are :math:`\lambda N / d` per row (empty: no
    penalty). ``locked`` holds the user's and then the item's row lock from
    the read to the write. Returns ``(updates, collisions)`` as
    :func:`sparse_epoch`, with a row as the unit of the write stamps.
    """
    n = order.size
    rank = users.shape[1]
    dtype = users.dtype.type
    p = np.empty(rank, dtype=users.dtype)
    q = np.empty(rank, dtype=users.dtype)
    has_reg = user_reg.size > 0
    updates = 0
    collisions = 0
    first, last = _claim(cursor, chunk, n)
    while first < last:
        for j in range(first, last):
            _prefetch_ratings(j, order, user, item, users, items, user_stamps, item_stamps, user_locks, item_locks,
                              locked)
            i = order[j]
            u, v = user[i], item[i]
            if locked:
                _lock(user_locks, u)
                _lock(item_locks, v)
            seen_u = _load_acquire(user_stamps, u)
            seen_v = _load_acquire(item_stamps, v)
            prediction = dtype(0.0)
            for k in range(rank):
                p[k] = users[u, k]
                q[k] = items[v, k]
                prediction += p[k] * q[k]
            g = dtype(2.0) * (prediction - rating[i])
            reg_u = user_reg[u] if has_reg else dtype(0.0)
            reg_v = item_reg[v] if has_reg else dtype(0.0)
            collided = _load_acquire(user_stamps, u) != seen_u or _load_acquire(item_stamps, v) != seen_v
            for k in range(rank):
                users[u, k] = users[u, k] - step * (g * q[k] + reg_u * p[k])
                items[v, k] = items[v, k] - step * (g * p[k] + reg_v * q[k])
            token = user_stamps.dtype.type(updates * workers + worker + 1)
            _store_release(user_stamps, u, token)
            _store_release(item_stamps, v, token)
            if locked:
                _unlock(item_locks, v)
                _unlock(user_locks, u)
            collisions += collided
            updates += 1
        first, last = _claim(cursor, chunk, n)
    return updates, collisions


# -- evaluation ------------------------------------------------------------------------
@njit(nogil=True, cache=True, error_model="numpy")
def sparse_scores(w, indices, offsets, values, labels, loss):
    """``(mean loss, error rate)`` of the linear model ``w`` (predict 1 when the margin is > 0)."""
    n = labels.size
    total = 0.0
    wrong = 0
    for i in range(n):
        z = 0.0
        for k in range(offsets[i], offsets[i + 1]):
            z += w[indices[k]] * values[k]
        sign = 2.0 * labels[i] - 1.0
        if loss == LOGISTIC:
            m = -sign * z  # log(1 + exp(m)), without overflow
            total += max(m, 0.0) + np.log1p(np.exp(-abs(m)))
        else:
            total += max(0.0, 1.0 - sign * z)
        wrong += (z > 0.0) != (labels[i] > 0.5)
    return total / max(n, 1), wrong / max(n, 1)


@njit(nogil=True, cache=True, error_model="numpy")
def ratings_rmse(users, items, user, item, rating):
    total = 0.0
    for i in range(rating.size):
        prediction = 0.0
        for k in range(users.shape[1]):
            prediction += users[user[i], k] * items[item[i], k]
        total += (prediction - rating[i]) ** 2
    return np.sqrt(total / max(rating.size, 1))
