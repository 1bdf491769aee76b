namespace SpliceTransport;

/// <summary>Where Kestrel's request processing continues when data arrives.</summary>
public enum ApplicationSchedulingMode
{
    /// <summary>
    /// On the thread pool (the default): application code never runs on an event-loop thread, so a slow
    /// or blocking handler cannot stall the other connections of its loop.
    /// </summary>
    ThreadPool,

    /// <summary>
    /// Inline on the event-loop thread that received the data: one thread hop less per request, for apps
    /// whose handlers never block. Kestrel's socket transport calls this <c>UnsafePreferInlineScheduling</c>.
    /// </summary>
    Inline,
}
