using System.Diagnostics.CodeAnalysis;
using SpliceTransport.Interop;

namespace SpliceTransport.Splice;

/// <summary>
/// The kernel pipes splice transfers borrow: <see cref="TryRent"/> takes an idle one or makes one, sized with
/// F_SETPIPE_SZ; <see cref="Return"/> keeps an empty one for the next transfer (a pipe2 and an fcntl saved) and
/// closes the rest. At most <see cref="MaxPooled"/> wait idle.
///
/// Thread-safety: one pool for the process, lock-free. A pipe is not tied to a loop: a proxied pair may span two
/// loops, and a send pump runs on whichever thread flushed, so a pipe may well be returned on another thread than
/// the one that rented it; per-loop pools would need a hand-off for that. The idle pipes sit in a fixed array of
/// slots taken and filled with one compare-and-swap each (no lock, no allocation, no node per pipe), and a
/// transfer rents once, not per system call, so the slots are touched far less often than the pipes are used.
///
/// Every pipe counts against its user's pipe pages (/proc/sys/fs/pipe-user-pages-soft, 16,384 pages by default)
/// whether or not it holds bytes: a pooled pipe is budget spent for nothing until it is rented again, which is
/// why the cap is small. Transfers rent when they have bytes to move and return as soon as the pipe is empty,
/// so 10,000 idle proxied connections hold no pipe at all.
/// </summary>
internal sealed class PipePool : IDisposable
{
    /// <summary>
    /// The capacity asked of each pipe: 1 MiB, the kernel's default pipe-max-size, and what Go's runtime asks
    /// (maxSpliceSize). A move of 1 MiB takes one splice call each way instead of sixteen with a default 64 KiB
    /// pipe. Lowered to pipe-max-size when that is smaller.
    /// </summary>
    public const int DefaultPipeSize = 1024 * 1024;

    /// <summary>
    /// The idle pipes kept: 16. Measured here, an unprivileged user past pipe-user-pages-soft (64 MiB by default)
    /// gets two-page pipes that cannot grow, and 64 idle pipes of 1 MiB would spend that whole budget on pipes
    /// nobody uses; 16 spend a quarter. Sixteen transfers starting at once still find a pipe ready.
    /// </summary>
    public const int DefaultMaxPooled = 16;

    /// <summary>The most <see cref="MaxPooled"/> may be: more idle pipes than this is a leak by another name.</summary>
    public const int MaxPooledLimit = 4096;

    private readonly SplicePipe?[] _idle;
    private readonly Syscalls _syscalls;
    private readonly SpliceMetrics _metrics;
    private volatile bool _disposed;

    /// <summary>
    /// A pool whose pipes ask for <paramref name="pipeSize"/> bytes (at most <paramref name="maxPipeSize"/>, which
    /// is /proc/sys/fs/pipe-max-size unless a test says otherwise), keeping at most <paramref name="maxPooled"/>
    /// idle (0: none, every return closes).
    /// </summary>
    public PipePool(SpliceMetrics metrics, Syscalls? syscalls = null, int pipeSize = DefaultPipeSize, int maxPooled = DefaultMaxPooled, int? maxPipeSize = null)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        ArgumentOutOfRangeException.ThrowIfLessThan(pipeSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(maxPooled);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxPooled, MaxPooledLimit);
        _metrics = metrics;
        _syscalls = syscalls ?? Syscalls.Default;
        _idle = new SplicePipe?[maxPooled];
        PipeSize = Math.Min(pipeSize, maxPipeSize ?? PipeLimits.MaxSize);
    }

    /// <summary>The size F_SETPIPE_SZ is asked for: the requested size, capped at pipe-max-size.</summary>
    public int PipeSize { get; }

    /// <summary>The most idle pipes the pool keeps.</summary>
    public int MaxPooled => _idle.Length;

    /// <summary>The idle pipes now (a snapshot: other threads may be renting and returning).</summary>
    public int Pooled
    {
        get
        {
            int count = 0;
            for (int i = 0; i < _idle.Length; i++)
            {
                count += Volatile.Read(ref _idle[i]) is null ? 0 : 1;
            }
            return count;
        }
    }

    /// <summary>
    /// An empty pipe of at least <see cref="PipeSize"/> bytes, idle or new; or false with the reason, counted on
    /// <c>splice.pipe.refused</c>. What the caller does with each outcome:
    /// <list type="bullet">
    /// <item>true: use the pipe for this transfer and <see cref="Return"/> it exactly once, when the transfer ends
    /// or before it waits for its source (it may rent again when the source is readable).</item>
    /// <item>false (any <see cref="PipeRefusalReasons"/> value): nothing has moved and nothing is owed; copy this
    /// transfer through user space, and ask again for the next one. Never retry in a loop: descriptors
    /// (<c>descriptor_limit</c>, <c>system_descriptor_limit</c>) and pipe pages (<c>pipe_size_limit</c>) come back
    /// only as other pipes and files close.</item>
    /// </list>
    /// </summary>
    public bool TryRent([NotNullWhen(true)] out SplicePipe? pipe, out PipeRefusal refusal)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        refusal = default;
        for (int i = 0; i < _idle.Length; i++)
        {
            // Read first, so that scanning empty slots writes no cache line.
            if (Volatile.Read(ref _idle[i]) is not null && (pipe = Interlocked.Exchange(ref _idle[i], null)) is not null)
            {
                pipe.TryMarkRented();
                _metrics.PipeRented(fromPool: true);
                return true;
            }
        }
        if (TryCreate(out pipe, out refusal))
        {
            pipe.TryMarkRented();
            _metrics.PipeRented(fromPool: false);
            return true;
        }
        _metrics.PipeRefused(refusal.Reason);
        return false;
    }

    /// <summary>
    /// Takes back a rented pipe. An empty one is pooled when there is a free slot; one that still holds bytes (a
    /// transfer that ended early), a closed one, and any beyond the cap are closed: the next transfer must find
    /// an empty pipe, and the kernel cannot be asked to empty one. Return every rented pipe, even a broken one,
    /// so the used count comes back down. Throws on a pipe of another pool or one returned twice.
    /// </summary>
    public void Return(SplicePipe pipe)
    {
        ArgumentNullException.ThrowIfNull(pipe);
        if (!ReferenceEquals(pipe.Owner, this))
        {
            throw new ArgumentException("The pipe belongs to another pool.", nameof(pipe));
        }
        if (!pipe.TryMarkReturned())
        {
            throw new InvalidOperationException("The pipe was returned twice: a second return could hand it to two transfers at once.");
        }
        if (pipe.IsEmpty && !pipe.IsClosed && !_disposed && TryPool(pipe))
        {
            _metrics.PipeReturned(pooled: true);
            if (_disposed)
            {
                // Dispose ran between the check above and the store: take back what it may have missed.
                CloseIdle();
            }
            return;
        }
        _metrics.PipeReturned(pooled: false);
        pipe.Dispose();
    }

    /// <summary>Closes the idle pipes; rented ones are closed when they come back.</summary>
    public void Dispose()
    {
        _disposed = true;
        CloseIdle();
    }

    private bool TryPool(SplicePipe pipe)
    {
        for (int i = 0; i < _idle.Length; i++)
        {
            if (Volatile.Read(ref _idle[i]) is null && Interlocked.CompareExchange(ref _idle[i], pipe, null) is null)
            {
                return true;
            }
        }
        return false;
    }

    private void CloseIdle()
    {
        for (int i = 0; i < _idle.Length; i++)
        {
            if (Interlocked.Exchange(ref _idle[i], null) is SplicePipe pipe)
            {
                _metrics.IdlePipeClosed();
                pipe.Dispose();
            }
        }
    }

    /// <summary>
    /// pipe2, then F_SETPIPE_SZ to <see cref="PipeSize"/>. A pipe that cannot reach the size is closed and
    /// refused: past pipe-user-pages-soft new pipes are two pages long, and a two-page pipe costs more system
    /// calls than the copy it would save.
    /// </summary>
    private bool TryCreate([NotNullWhen(true)] out SplicePipe? pipe, out PipeRefusal refusal)
    {
        pipe = null;
        SyscallResult created = _syscalls.CreatePipe(out FileDescriptorHandle? readEnd, out FileDescriptorHandle? writeEnd);
        if (!created.IsSuccess)
        {
            refusal = PipeRefusal.From("pipe2", created.Errno);
            return false;
        }
        SyscallResult sized = _syscalls.SetPipeSize(writeEnd!, PipeSize);
        if (!sized.IsSuccess)
        {
            readEnd!.Dispose();
            writeEnd!.Dispose();
            refusal = PipeRefusal.From("fcntl(F_SETPIPE_SZ)", sized.Errno);
            return false;
        }
        refusal = default;
        // F_SETPIPE_SZ returns the capacity it set: the size asked, rounded up to a power-of-two number of pages.
        pipe = new SplicePipe(readEnd!, writeEnd!, (int)sized.Count, _syscalls, this);
        return true;
    }
}
