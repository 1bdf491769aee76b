namespace SpliceTransport;

/// <summary>
/// Present on every connection SpliceTransport accepted, and visible through <c>HttpContext.Features</c>:
/// it tells that a request arrived through this transport, and on which event loop.
/// </summary>
public interface ISpliceConnectionFeature
{
    /// <summary>The index of the event-loop thread (<c>splice-loop-N</c>) that serves the connection.</summary>
    int EventLoopIndex { get; }

    /// <summary>
    /// True while the connection's transport pipe is still the one SpliceTransport created: no TLS and no
    /// connection logging has wrapped it. Only then can file bytes bypass the pipe.
    /// </summary>
    bool IsTransportPipeOwned { get; }
}
