using System.IO.Pipelines;

namespace SpliceTransport.Engine;

/// <summary>
/// Where the send pump continues after a flush: on a thread-pool thread, after the work that thread is doing now,
/// in a batch with the other pumps of this loop that became ready meanwhile; on the loop thread (inline
/// application scheduling), the loop's queue. Either way Kestrel finishes every pipelined request it already
/// has before the pump runs: sixteen pipelined responses leave in one sendmsg, not sixteen.
///
/// The batch is Kestrel's IOQueue (its socket transport sends through one per core): one work item runs every
/// pump queued before it starts, so under load a flush costs a queue entry, not a work item. One work item per
/// flush made TLS cost 3.0 work items per response against Kestrel's 2.2: SslStream flushes every record it writes
/// to the transport, and each flush queued its own pump run. The item goes to the flushing thread's own queue
/// (preferLocal), so it runs after that thread's current work, as a single pump run did.
/// </summary>
/// <remarks>
/// One exception: a flush that hands the pump a file response (<see cref="FlushInline"/>) runs the pump at once,
/// inside the flush, on the flushing thread. The pump sends the headers and the file there and then, so a file
/// that fits the socket has left before the flush returns, and the application's wait for it completes without
/// a hop: two thread-pool work items fewer per small file (the pump's, and the application's continuation after
/// the file). Pipelined plain responses keep the deferred batching above.
/// </remarks>
internal sealed class SendScheduler(EventLoop loop) : PipeScheduler, IThreadPoolWorkItem
{
    /// <summary>Set around a flush whose reader wake-up runs inline; taken by the first schedule it makes.</summary>
    [ThreadStatic]
    private static bool t_runNextInline;

    /// <summary>Pump runs queued from thread-pool threads, for the next batch.</summary>
    private readonly System.Collections.Concurrent.ConcurrentQueue<(Action<object?> Action, object? State)> _batch = new();

    /// <summary>1 while a batch work item is queued or running: runs queued meanwhile join it.</summary>
    private int _batchScheduled;

    /// <summary>
    /// Flushes <paramref name="pipe"/> (and makes the calls in <paramref name="wake"/>) with the pump's wake-up, if
    /// they make one, run inline: the pump sends now, on this thread, until it has sent everything or must wait
    /// for the socket. Only the first wake-up runs inline; any made by what the pump runs (a progress waiter's
    /// next flush) is scheduled as usual, so the pump never recurses into itself.
    /// </summary>
    public static ValueTask<FlushResult> FlushInline(PipeWriter pipe, Action? wake, CancellationToken cancellationToken)
    {
        t_runNextInline = true;
        try
        {
            ValueTask<FlushResult> flush = pipe.FlushAsync(cancellationToken);
            wake?.Invoke();
            return flush;
        }
        finally
        {
            t_runNextInline = false;
        }
    }

    public override void Schedule(Action<object?> action, object? state)
    {
        if (t_runNextInline)
        {
            t_runNextInline = false;
            action(state);
            return;
        }
        if (Thread.CurrentThread.IsThreadPoolThread)
        {
            _batch.Enqueue((action, state));
            if (Interlocked.Exchange(ref _batchScheduled, 1) == 0)
            {
                System.Threading.ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
            }
        }
        else
        {
            // The loop thread itself, or a thread of the application's own: the loop runs it next.
            loop.Schedule(action, state);
        }
    }

    /// <summary>
    /// Runs the batch. Invariant (with <see cref="Schedule"/>): a run queued after the queue was last seen empty
    /// either finds <see cref="_batchScheduled"/> at 0 and queues a new batch, or is seen by the look that follows
    /// the reset; Exchange is a full fence on both sides, so no run is left queued with no batch to run it.
    /// </summary>
    void IThreadPoolWorkItem.Execute()
    {
        while (true)
        {
            while (_batch.TryDequeue(out (Action<object?> Action, object? State) run))
            {
                run.Action(run.State);
            }
            Interlocked.Exchange(ref _batchScheduled, 0);
            if (_batch.IsEmpty || Interlocked.Exchange(ref _batchScheduled, 1) == 1)
            {
                return; // Nothing more, or a new batch was queued for it already.
            }
        }
    }
}
