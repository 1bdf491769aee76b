namespace SpliceTransport.Engine;

/// <summary>Receives the readiness events of one descriptor registered with an <see cref="EventLoop"/>.</summary>
internal interface IEpollHandler
{
    /// <summary>
    /// Called on the loop thread with the EPOLL* bits that fired. Registration is edge-triggered, so the
    /// handler must drive the descriptor to EAGAIN (or remember that it is still ready) before it waits again.
    /// </summary>
    void OnEvents(uint events);
}
