using System.Collections.Concurrent;

namespace SpliceTransport.Files;

/// <summary>
/// The transport's threads for work that waits on a disk: cold file chunks read into the page cache
/// (<see cref="FileResidency"/>) and forwarded bytes written to capture files (<c>Splice/CaptureWriter</c>). Threads
/// of their own, as nginx's <c>aio threads</c> has its own pool, so that a read waiting for the disk blocks neither
/// an event loop nor a thread-pool worker.
///
/// Why not the thread pool: a read of a cold 2 MiB chunk from a slow disk holds its thread for tens of
/// milliseconds, and the pool does not know the thread is blocked on a disk. On a server given one core, as
/// perf/run.sh pins them, the pool keeps one worker, and Kestrel's request processing queued behind the reads:
/// with four cold downloads the hot 4 KiB requests' p99 rose ×6 (perf/results/coldfiles.md), more than with
/// no prefetching at all (×4). Here a request waits for nothing but the CPU.
///
/// Threads are started on demand, one for each read queued while none is idle, up to <see cref="MaxThreads"/>,
/// and then live as long as the transport; an idle one costs its stack reservation and nothing else. A read
/// queued while all are busy waits its turn: the disk is then the bottleneck, and more threads would only
/// lengthen its queue. The continuation of each read (the rest of the send) runs on the thread pool, never here.
/// </summary>
internal sealed class DiskThreads : IDisposable
{
    /// <summary>
    /// The most reads in flight at once: 16. A disk serves many requests at once (an SSD's queue is deep), so a
    /// few more threads than cold downloads keep it busy; nginx's default pool has 32 threads for every worker
    /// process. Past this, reads queue here, in order.
    /// </summary>
    public const int MaxThreads = 16;

    private const string ThreadNamePrefix = "splice-disk-";

    private readonly BlockingCollection<ColdRead> _queue = new();
    private readonly Lock _startLock = new();
    private int _threads;
    private int _idle;

    /// <summary>Threads started so far (for tests).</summary>
    public int ThreadCount => Volatile.Read(ref _threads);

    /// <summary>Threads waiting for a read, less the reads waiting for a thread (for tests).</summary>
    public int IdleThreadCount => Volatile.Read(ref _idle);

    /// <summary>
    /// Runs <paramref name="read"/> on one of these threads and completes with its result; an exception it throws
    /// faults the task. After <see cref="Dispose"/> it throws <see cref="ObjectDisposedException"/>.
    /// </summary>
    public Task<T> RunAsync<T>(Func<T> read)
    {
        ArgumentNullException.ThrowIfNull(read);
        var job = new ColdRead<T>(read);
        try
        {
            _queue.Add(job);
        }
        catch (InvalidOperationException)
        {
            throw new ObjectDisposedException(nameof(DiskThreads));
        }
        // _idle is the threads waiting for a read less the reads waiting for a thread. Every read takes one off,
        // every thread going back to wait puts one back; below zero, this read has no thread of its own, and one
        // is started (up to the cap; past it, the read waits for the next thread to finish). Counting reads, not
        // only threads, is what keeps a read from counting on an idle thread that another read has just taken.
        if (Interlocked.Decrement(ref _idle) < 0)
        {
            StartThread();
        }
        return job.Task;
    }

    private void StartThread()
    {
        lock (_startLock)
        {
            if (_threads >= MaxThreads || _queue.IsAddingCompleted)
            {
                return;
            }
            int index = _threads++;
            var thread = new Thread(Run) { IsBackground = true, Name = ThreadNamePrefix + index };
            thread.UnsafeStart();
        }
    }

    private void Run()
    {
        while (true)
        {
            Interlocked.Increment(ref _idle);
            if (!_queue.TryTake(out ColdRead? job, Timeout.Infinite))
            {
                return; // Completed and empty: the transport is stopping.
            }
            job.Execute();
        }
    }

    /// <summary>
    /// Lets the threads end once the reads already queued are done (they are the sends of connections still
    /// closing); no read is queued after this.
    /// </summary>
    public void Dispose() => _queue.CompleteAdding();

    private abstract class ColdRead
    {
        public abstract void Execute();
    }

    private sealed class ColdRead<T>(Func<T> read) : ColdRead
    {
        // Continuations run on the thread pool, never on this thread, which must be free for the next read.
        private readonly TaskCompletionSource<T> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task<T> Task => _completion.Task;

        public override void Execute()
        {
            try
            {
                _completion.SetResult(read());
            }
            catch (Exception exception)
            {
                _completion.SetException(exception);
            }
        }
    }
}
