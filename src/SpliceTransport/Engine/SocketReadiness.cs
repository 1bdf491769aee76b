using System.Runtime.CompilerServices;
using SpliceTransport.Interop;

namespace SpliceTransport.Engine;

/// <summary>
/// The edge-triggered readiness of one connected socket: the epoll handler that receives its events, and
/// one <see cref="ReadinessEdge"/> for each direction, on which a pump waits after the kernel said EAGAIN.
/// </summary>
internal sealed class SocketReadiness : IEpollHandler
{
    /// <summary>Events that make a receive worth trying: data, a FIN, or an error to collect.</summary>
    private const uint ReadEvents = LibC.EPOLLIN | LibC.EPOLLRDHUP | LibC.EPOLLHUP | LibC.EPOLLERR;

    /// <summary>Events that make a send worth trying: room, or an error to collect.</summary>
    private const uint WriteEvents = LibC.EPOLLOUT | LibC.EPOLLHUP | LibC.EPOLLERR;

    /// <summary>Events that say the peer will send no more (FIN or reset) or that an error waits.</summary>
    private const uint EndEvents = LibC.EPOLLRDHUP | LibC.EPOLLHUP | LibC.EPOLLERR;

    private volatile bool _receiveEnded;

    public SocketReadiness(EventLoop loop)
    {
        Readable = new ReadinessEdge(loop);
        Writable = new ReadinessEdge(loop);
    }

    public ReadinessEdge Readable { get; }

    public ReadinessEdge Writable { get; }

    /// <summary>
    /// Sticky: an event has reported the peer's FIN, a reset, or a pending error. Edge-triggered epoll reports
    /// that once, often in the same event as the last data, and never again; a receive pump that takes a short
    /// read for "drained, wait for the next edge" would then wait forever. Once this is set, only a receive
    /// that returns 0, an error, or EAGAIN ends the reading.
    /// </summary>
    public bool ReceiveEnded => _receiveEnded;

    public void OnEvents(uint events)
    {
        if ((events & EndEvents) != 0)
        {
            // Before the signal below, which may run the receive pump inline.
            _receiveEnded = true;
        }
        if ((events & ReadEvents) != 0)
        {
            Readable.Signal();
        }
        if ((events & WriteEvents) != 0)
        {
            Writable.Signal();
        }
    }

    /// <summary>
    /// Wakes both pumps for good: every wait, now and later, completes at once, and the pumps then see that
    /// their connection is shutting down. Needed because a shutdown that resets the connection makes no
    /// epoll event of its own.
    /// </summary>
    public void Cancel()
    {
        Readable.Cancel();
        Writable.Cancel();
    }
}

/// <summary>
/// The edges of one direction of an edge-triggered descriptor, counted, and the one pump that may wait
/// for the next. Edge-triggered epoll reports a change, not a state, so a pump that got EAGAIN must wait
/// for an edge that came <em>after</em> it started the call, and not miss one that came meanwhile. Hence:
/// <code>
/// int seen = edge.Observe();        // before the system call
/// … the call says EAGAIN (or returns short) …
/// await edge.WaitAsync(seen);       // completes at once if an edge arrived since
/// </code>
/// Thread-safe: the waiting pump may run on any thread (the send pump runs on the thread that flushed),
/// while edges are signalled on the loop thread. The waiter's continuation runs on the loop thread.
/// </summary>
internal sealed class ReadinessEdge(EventLoop loop)
{
    private int _edges;
    private Action? _continuation;
    private volatile bool _canceled;

    /// <summary>The edge count to pass to <see cref="WaitAsync"/> after the next system call would block.</summary>
    public int Observe() => Volatile.Read(ref _edges);

    /// <summary>Completes once an edge has arrived after <paramref name="observed"/> was read.</summary>
    public EdgeAwaiter WaitAsync(int observed) => new(this, observed);

    /// <summary>Makes every wait, now and later, complete at once. Loop thread.</summary>
    public void Cancel()
    {
        // Before the signal's full fence: a waiter that registers after it sees the flag (see Register).
        _canceled = true;
        Signal();
    }

    /// <summary>Counts an edge and runs the waiting continuation, if any, inline. Loop thread.</summary>
    public void Signal()
    {
        Interlocked.Increment(ref _edges);
        Interlocked.Exchange(ref _continuation, null)?.Invoke();
    }

    private void Register(Action continuation, int observed)
    {
        Interlocked.Exchange(ref _continuation, continuation);
        // Either Signal sees the continuation stored above, or this sees its increment (both use full
        // fences), so no edge is lost; whichever takes the continuation back runs it, exactly once.
        if ((Volatile.Read(ref _edges) != observed || _canceled) && Interlocked.CompareExchange(ref _continuation, null, continuation) == continuation)
        {
            loop.Schedule(static c => ((Action)c!)(), continuation);
        }
    }

    internal readonly struct EdgeAwaiter(ReadinessEdge edge, int observed) : ICriticalNotifyCompletion
    {
        public EdgeAwaiter GetAwaiter() => this;

        public bool IsCompleted => Volatile.Read(ref edge._edges) != observed || edge._canceled;

        public void GetResult()
        {
        }

        public void OnCompleted(Action continuation) => edge.Register(continuation, observed);

        public void UnsafeOnCompleted(Action continuation) => edge.Register(continuation, observed);
    }
}
