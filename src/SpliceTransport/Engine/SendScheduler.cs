using System.IO.Pipelines;

namespace SpliceTransport.Engine;

/// <summary>
/// Where the send pump continues after a flush: on the flushing thread, but after the work that thread is
/// doing now. On a thread-pool thread that is the thread's own local queue; on the loop thread (inline
/// application scheduling), the loop's queue. Either way no other thread is woken, so a response costs no
/// context switch, and yet Kestrel finishes every pipelined request it already has before the pump runs:
/// sixteen pipelined responses leave in one sendmsg, not sixteen. (Kestrel's socket transport gets the same
/// batching from its IOQueue.)
/// </summary>
internal sealed class SendScheduler(EventLoop loop) : PipeScheduler
{
    public override void Schedule(Action<object?> action, object? state)
    {
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
