using System.Runtime.InteropServices;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// A run of file bytes queued for the send pump, to leave the socket after exactly <see cref="Position"/>
/// bytes of the output pipe (headers and everything before them) and before any pipe byte after them.
/// The segment does not own the file descriptor: whoever queued it closes it once <see cref="Completion"/>
/// has completed, which the pump guarantees only after its last system call on it.
/// </summary>
internal sealed class FileSegment
{
    private readonly TaskCompletionSource<bool> _completion =
        new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Guards the progress waiter against the pump's progress and completion: the completion source itself, private
    /// and never locked elsewhere, so that a segment (one per file response) needs no lock object of its own.
    /// </summary>
    private object ProgressLock => _completion;

    /// <summary>The one waiter of <see cref="WhenRemainingAtMost"/>, if any: the response body flushing.</summary>
    private TaskCompletionSource<bool>? _progress;

    /// <summary>The <see cref="Remaining"/> at or below which <see cref="_progress"/> completes.</summary>
    private long _progressTarget;

    public FileSegment(SafeHandle file, string path, long offset, long count, long position, ResidencyMemo? residency = null)
    {
        Residency = residency;
        File = file;
        Path = path;
        Offset = offset;
        Remaining = count;
        Count = count;
        Position = position;
    }

    public SafeHandle File { get; }

    /// <summary>What the last probe of the whole file found, shared by the sends of one cached descriptor; null: probe every chunk.</summary>
    public ResidencyMemo? Residency { get; }

    /// <summary>The path the file was opened from, for messages.</summary>
    public string Path { get; }

    /// <summary>The file offset of the next byte to send; sendfile advances it.</summary>
    public long Offset;

    /// <summary>Bytes still to send. The pump changes it only through <see cref="Advance"/>; others may read it.</summary>
    public long Remaining;

    /// <summary>Bytes the segment holds in all.</summary>
    public long Count { get; }

    /// <summary>The number of output-pipe bytes that must leave before this segment.</summary>
    public long Position { get; }

    /// <summary>Set when the pump had to copy the bytes through user space, with the reason.</summary>
    public string? CopiedBecause { get; set; }

    /// <summary>True once all bytes were sent; false if the connection closed first. Faults if the file was truncated.</summary>
    public Task<bool> Completion => _completion.Task;

    public bool IsCompleted => _completion.Task.IsCompleted;

    /// <summary>
    /// Completes with true once at most <paramref name="remaining"/> bytes are left to send; if the segment ends
    /// first, as <see cref="Completion"/> does (false when the connection closed, faulted when the file was
    /// truncated). One waiter at a time.
    /// This lets each flush of the response body wait for the part of the file counted so far, as Kestrel's
    /// MinResponseDataRate expects of a flush, rather than for the whole file.
    /// </summary>
    public Task<bool> WhenRemainingAtMost(long remaining)
    {
        if (remaining <= 0)
        {
            return Completion;
        }
        lock (ProgressLock)
        {
            if (IsCompleted)
            {
                return Completion;
            }
            if (Volatile.Read(ref Remaining) <= remaining)
            {
                return s_true;
            }
            if (_progress is not null)
            {
                // A second waiter at once (flushes of one response are sequential, so not Kestrel's pattern):
                // it waits for the end rather than displace the first, which would then never complete.
                return Completion;
            }
            // Synchronous continuations: see Advance.
            _progress = new TaskCompletionSource<bool>();
            _progressTarget = remaining;
            // Published before Remaining is read again, as Advance publishes Remaining before it reads
            // _progress: one of the two sees the other (both use full fences), so no progress is missed.
            Interlocked.MemoryBarrier();
            if (Volatile.Read(ref Remaining) <= remaining)
            {
                _progress = null;
                return s_true;
            }
            return _progress.Task;
        }
    }

    private static readonly Task<bool> s_true = Task.FromResult(true);

    /// <summary>
    /// Records <paramref name="sent"/> bytes as sent, and wakes the progress waiter whose target was reached. Pump
    /// only.
    ///
    /// The waiter runs inline, on the pump's thread (usually the loop), not on the thread pool. It is the body
    /// feature between two blocks of a file's count: Kestrel's flush bookkeeping and the next block's write,
    /// which swallows scratch and registers the next waiter, a microsecond of work that never blocks. Queued
    /// to the pool instead, each block woke a worker, which then spins looking for more work (sched_yield):
    /// measured on a 32 MiB file (100 downloads, 4 at a time), thread-pool work items per response fell from
    /// 37-41 to 23-25 with this. The waiter cannot recurse: its next target lies beyond what this call has
    /// recorded. Only the end of the segment (the last block's wait is <see cref="Completion"/>) resumes the
    /// application, and that runs on the pool.
    /// </summary>
    public void Advance(long sent)
    {
        Offset += sent;
        // A full fence: a volatile write followed by a read of _progress could be reordered, and a waiter
        // registering at that moment would then wait for the end of the file instead of this progress.
        long left = Interlocked.Add(ref Remaining, -sent);
        if (Volatile.Read(ref _progress) is null)
        {
            return;
        }
        TaskCompletionSource<bool>? reached = null;
        lock (ProgressLock)
        {
            if (_progress is not null && left <= _progressTarget)
            {
                reached = _progress;
                _progress = null;
            }
        }
        // Outside the lock: the waiter registers its next target under it.
        reached?.TrySetResult(true);
    }

    public void SetSent()
    {
        _completion.TrySetResult(true);
        EndProgress();
    }

    public void SetConnectionClosed()
    {
        _completion.TrySetResult(false);
        EndProgress();
    }

    public void SetFailed(Exception error)
    {
        _completion.TrySetException(error);
        EndProgress();
    }

    /// <summary>The segment ended: the progress waiter, if any, learns it as <see cref="Completion"/> tells it.</summary>
    private void EndProgress()
    {
        TaskCompletionSource<bool>? waiter;
        lock (ProgressLock)
        {
            waiter = _progress;
            _progress = null;
        }
        if (waiter is null)
        {
            return;
        }
        // On the pool: after the end, the waiter's continuation goes on to the application's code, which must
        // not run on the loop thread (the pump's or StopFiles's).
        ThreadPool.UnsafeQueueUserWorkItem(static state =>
        {
            var (waiter, completion) = state;
            if (completion.IsFaulted)
            {
                waiter.TrySetException(completion.Exception!.InnerExceptions);
            }
            else
            {
                waiter.TrySetResult(completion.Result);
            }
        }, (waiter, Completion), preferLocal: false);
    }
}
