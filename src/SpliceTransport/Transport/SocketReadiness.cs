using System.Runtime.CompilerServices;
using SpliceTransport.Engine;
using SpliceTransport.Interop;

namespace SpliceTransport.Transport;

/// <summary>
/// The edge-triggered readiness of one connected socket, and the two waits on it: the receive pump's for
/// readability and the send pump's for writability.
///
/// Edge-triggered epoll reports a change, not a state, so the state lives here: an event sets a flag, and a
/// pump clears it only when a system call said EAGAIN (or returned short, which on a stream socket means the
/// same: any data arriving later raises a new edge). A wait that starts while the flag is set completes at
/// once. Both waits complete inline on the loop thread, which is the only thread that touches this object.
/// </summary>
internal sealed class SocketReadiness : IEpollHandler
{
    private readonly LoopWait _readable = new();
    private readonly LoopWait _writable = new();

    /// <summary>Events that make a receive worth trying: data, a FIN, or an error to collect.</summary>
    private const uint ReadEvents = LibC.EPOLLIN | LibC.EPOLLRDHUP | LibC.EPOLLHUP | LibC.EPOLLERR;

    /// <summary>Events that make a send worth trying: room, or an error to collect.</summary>
    private const uint WriteEvents = LibC.EPOLLOUT | LibC.EPOLLHUP | LibC.EPOLLERR;

    public bool IsReadable { get; private set; }

    public bool IsWritable { get; private set; } = true;

    /// <summary>Set by <see cref="Cancel"/>: every wait, now and later, completes at once.</summary>
    public bool IsCanceled { get; private set; }

    public void OnEvents(uint events)
    {
        if ((events & ReadEvents) != 0)
        {
            IsReadable = true;
            _readable.Complete();
        }
        if ((events & WriteEvents) != 0)
        {
            IsWritable = true;
            _writable.Complete();
        }
    }

    /// <summary>The last receive said EAGAIN (or returned short): wait for the next edge.</summary>
    public void ClearReadable() => IsReadable = false;

    /// <summary>The last send said EAGAIN (or returned short): wait for the next edge.</summary>
    public void ClearWritable() => IsWritable = false;

    /// <summary>Completes when the socket is readable, or the connection is being torn down.</summary>
    public LoopWait WaitReadableAsync() => _readable.Arm(IsReadable || IsCanceled);

    /// <summary>Completes when the socket is writable, or the connection is being torn down.</summary>
    public LoopWait WaitWritableAsync() => _writable.Arm(IsWritable || IsCanceled);

    /// <summary>Wakes both pumps for good; they then see the connection is closing.</summary>
    public void Cancel()
    {
        IsCanceled = true;
        _readable.Complete();
        _writable.Complete();
    }

    /// <summary>
    /// A reusable, allocation-free wait for one pump. Single-threaded by the loop invariant, so it needs no
    /// synchronisation: the continuation is stored by the await and run inline by the next event.
    /// </summary>
    internal sealed class LoopWait : ICriticalNotifyCompletion
    {
        private Action? _continuation;
        private bool _ready;

        public LoopWait Arm(bool alreadyReady)
        {
            _ready = alreadyReady;
            return this;
        }

        public LoopWait GetAwaiter() => this;

        public bool IsCompleted => _ready;

        public void GetResult() => _ready = false;

        public void OnCompleted(Action continuation) => _continuation = continuation;

        public void UnsafeOnCompleted(Action continuation) => _continuation = continuation;

        public void Complete()
        {
            _ready = true;
            Action? continuation = _continuation;
            if (continuation is not null)
            {
                _continuation = null;
                continuation();
            }
        }
    }
}
