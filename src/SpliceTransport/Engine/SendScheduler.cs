using System.IO.Pipelines;

namespace SpliceTransport.Engine;

/// <summary>
/// Where the send pump continues after a flush: on the flushing thread, but after the work that thread is
/// doing now. On a thread-pool thread that is the thread's own local queue (the pool still asks for a worker on
/// every enqueue, and an idle one may take it: a work item, and sometimes a wake-up); on the loop thread (inline
/// application scheduling), the loop's queue. Either way Kestrel finishes every pipelined request it already has before the pump runs:
/// sixteen pipelined responses leave in one sendmsg, not sixteen. (Kestrel's socket transport gets the same
/// batching from its IOQueue.)
/// </summary>
/// <remarks>
/// One exception: a flush that hands the pump a file response (<see cref="FlushInline"/>) runs the pump at once,
/// inside the flush, on the flushing thread. The pump sends the headers and the file there and then, so a file
/// that fits the socket has left before the flush returns, and the application's wait for it completes without
/// a hop: two thread-pool work items fewer per small file (the pump's, and the application's continuation after
/// the file). Pipelined plain responses keep the deferred batching above.
/// </remarks>
internal sealed class SendScheduler(EventLoop loop) : PipeScheduler
{
    /// <summary>Set around a flush whose reader wake-up runs inline; taken by the first schedule it makes.</summary>
    [ThreadStatic]
    private static bool t_runNextInline;

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
            System.Threading.ThreadPool.UnsafeQueueUserWorkItem(action, state, preferLocal: true);
        }
        else
        {
            // The loop thread itself, or a thread of the application's own: the loop runs it next.
            loop.Schedule(action, state);
        }
    }
}
