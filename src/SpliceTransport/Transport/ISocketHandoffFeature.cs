using SpliceTransport.Engine;
using SpliceTransport.Interop;
using SpliceTransport.Splice;
using SpliceTransport.Files;

namespace SpliceTransport.Transport;

/// <summary>
/// Lets a byte path that moves data without the pipes (an upload spliced to a file, a forwarder splicing
/// between two connections) take the socket from the connection's pumps for a while, and give it back.
///
/// Receiving: <see cref="PauseReceivingAsync"/> stops the receive pump before its next recv(2); from then on
/// the socket's receive queue is the caller's to read (splice, recv) until <see cref="ResumeReceiving"/>.
/// Bytes the pump had already received stay in the input pipe, in order, ahead of anything the caller reads:
/// consume them first (through the transport input, or Kestrel's body reader).
///
/// Sending: <see cref="PauseSendingAsync"/> completes once every byte written to the transport output before
/// the call (pipe bytes and queued files) has been handed to the kernel, and holds the send pump until
/// <see cref="ResumeSending"/>: the socket's send side is then the caller's. Nothing must be written to the
/// transport output while sending is paused; it would wait until the resume.
///
/// Readiness stays with the loop: wait on <see cref="Readiness"/>'s edges (Observe before the call,
/// WaitAsync(seen) after EAGAIN). A connection that shuts down (abort, reset, Kestrel's dispose) while paused
/// cancels those edges, and its descriptor closes only after the pumps end, which is after the resume: so the
/// caller must always resume what it paused, in a finally.
/// </summary>
internal interface ISocketHandoffFeature
{
    /// <summary>The connection's id, for logs.</summary>
    string ConnectionId { get; }

    /// <summary>The connected, non-blocking socket. Not to be closed, shut down for reading, or kept.</summary>
    FileDescriptorHandle Socket { get; }

    /// <summary>The socket's readiness edges, signalled by the loop.</summary>
    SocketReadiness Readiness { get; }

    /// <summary>The loop that owns the socket.</summary>
    EventLoop Loop { get; }

    /// <summary>The system calls of the data path (the fault-injection seam in tests).</summary>
    Syscalls Syscalls { get; }

    /// <summary>True while nothing (TLS, connection middleware) has wrapped the transport pipe.</summary>
    bool IsTransportPipeOwned { get; }

    /// <summary>True once the connection is shutting down: stop, and resume what was paused.</summary>
    bool IsShuttingDown { get; }

    /// <summary>
    /// Stops the receive pump before its next recv(2). True once it is stopped: it will not read until
    /// <see cref="ResumeReceiving"/>. False if receiving has already ended (the peer's FIN, an error, a shutdown):
    /// then the input pipe holds, or held, all there will be, and there is nothing to resume.
    /// Only one pause at a time; a second one throws <see cref="InvalidOperationException"/>.
    /// </summary>
    Task<bool> PauseReceivingAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Lets the receive pump read again. Its first step is a recv(2) without waiting for an edge: the caller may
    /// have taken the edge that announced the bytes (or the FIN) now waiting, and no new one would come.
    /// With a <paramref name="failure"/> the caller met on the socket (a splice that said ECONNRESET), the pump
    /// ends instead, as if its own recv had said it: the input completes with the error, a reset logged as one. A
    /// socket reports a reset once, so the pump could not learn it by reading.
    /// </summary>
    void ResumeReceiving(SocketFailure? failure = null);

    /// <summary>
    /// Completes once everything written to the transport output before the call has left for the kernel, with
    /// the send pump then held until <see cref="ResumeSending"/>. False if the output has ended (completed,
    /// or the connection is shutting down): nothing may be sent, and there is nothing to resume.
    /// </summary>
    Task<bool> PauseSendingAsync(CancellationToken cancellationToken);

    /// <summary>
    /// Lets the send pump send again; with a <paramref name="failure"/> the caller met sending on the socket
    /// (EPIPE, ECONNRESET), the pump ends with it instead and the connection is reset, as when its own send fails.
    /// </summary>
    void ResumeSending(SocketFailure? failure = null);

    /// <summary>
    /// Whether the loop reports the socket's reads (EPOLLIN): a holder that will not read the socket for a while
    /// (a forwarder whose pipe is full, waiting for its destination) turns them off, so that every packet arriving
    /// meanwhile does not wake the loop for nothing, and on again before it waits for reads. Turning them on
    /// reports data already waiting as an edge. Loop thread only; one epoll_ctl when it changes; resuming the
    /// receive pump turns them on.
    /// </summary>
    void WatchReadable(bool watch);

    /// <summary>
    /// Raised on the loop when the connection starts shutting down, after its own edges are cancelled: a holder
    /// that waits on another connection's edge (a forwarder waiting for its other socket) needs this to wake.
    /// Handlers run inline, once; subscribe on the loop thread, and unsubscribe when the socket is given back.
    /// </summary>
    event Action? ShuttingDown;

    /// <summary>Why the connection was shut down with a reset, once it was; null for a graceful end or none yet.</summary>
    Exception? ShutdownReason { get; }

    /// <summary>The transport's pool of kernel pipes, for splice(2) between this socket and another descriptor.</summary>
    PipePool Pipes { get; }

    /// <summary>The transport's threads for work that waits on a disk (a capture's file writes).</summary>
    DiskThreads DiskThreads { get; }

    /// <summary>The transport's metrics.</summary>
    SpliceMetrics Metrics { get; }

    /// <summary>The transport's logger.</summary>
    Microsoft.Extensions.Logging.ILogger Logger { get; }
}
