using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using SpliceTransport.Forwarding;

namespace SpliceTransport;

/// <summary>
/// The transport's <see cref="System.Diagnostics.Metrics"/> instruments, on the meter <see cref="MeterName"/>
/// created through the host's <see cref="IMeterFactory"/>. Names follow OpenTelemetry's naming rules (singular
/// namespaces, UpDownCounters not pluralized, no unit in a name, attributes of a system under its namespace,
/// lower_snake values), and the connection instruments carry the end-point attributes Kestrel's own
/// <c>kestrel.active_connections</c> carries, so the two can be read side by side.
/// </summary>
internal sealed class SpliceMetrics
{
    /// <summary>The name of the meter that holds every SpliceTransport instrument.</summary>
    public const string MeterName = "SpliceTransport";

    public const string ActiveConnectionsName = "splice.connection.active";
    public const string AcceptedConnectionsName = "splice.connection.accepted";
    public const string ConnectedConnectionsName = "splice.connection.connected";
    public const string ZeroCopyResponsesName = "splice.sendfile.responses";
    public const string ZeroCopyBytesName = "splice.sendfile.sent";
    public const string FallbacksName = "splice.sendfile.fallbacks";
    public const string PrefetchesName = "splice.sendfile.prefetches";
    public const string PrefetchedName = "splice.sendfile.prefetched";

    public const string UploadFallbacksName = "splice.upload.fallbacks";

    public const string ForwardedBytesName = "splice.forward.bytes";
    public const string ForwardFallbacksName = "splice.forward.fallbacks";
    public const string CaptureDroppedName = "splice.forward.capture.dropped";

    /// <summary>
    /// The attribute of <see cref="ForwardedBytesName"/>: <see cref="ForwardModeSplice"/> (spliced, never in user
    /// space) or <see cref="ForwardModeCopy"/> (through a buffer or the connections' pipes).
    /// </summary>
    public const string ForwardModeTag = "splice.forward.mode";
    public const string ForwardModeSplice = "splice";
    public const string ForwardModeCopy = "copy";

    /// <summary>The attribute of <see cref="ForwardFallbacksName"/>: one of the <see cref="ForwardFallbackReasons"/> or <see cref="Splice.PipeRefusalReasons"/>.</summary>
    public const string ForwardFallbackReasonTag = "splice.forward.fallback.reason";

    private static readonly KeyValuePair<string, object?> SplicedBytes = new(ForwardModeTag, ForwardModeSplice);
    private static readonly KeyValuePair<string, object?> CopiedBytes = new(ForwardModeTag, ForwardModeCopy);

    public const string PipeCountName = "splice.pipe.count";
    public const string PipeRefusedName = "splice.pipe.refused";

    /// <summary>The attribute of <see cref="FallbacksName"/>: one of the <see cref="Http.FallbackReasons"/>.</summary>
    public const string FallbackReasonTag = "splice.sendfile.fallback.reason";

    /// <summary>The attribute of <see cref="UploadFallbacksName"/>: one of the <see cref="Http.UploadFallbackReasons"/>.</summary>
    public const string UploadFallbackReasonTag = "splice.upload.fallback.reason";

    /// <summary>
    /// The attribute of <see cref="PipeCountName"/>: <see cref="PipeStateUsed"/> (rented by a transfer) or
    /// <see cref="PipeStateIdle"/> (pooled), as OpenTelemetry's <c>db.client.connection.count</c> splits a pool.
    /// </summary>
    public const string PipeStateTag = "splice.pipe.state";
    public const string PipeStateUsed = "used";
    public const string PipeStateIdle = "idle";

    /// <summary>The attribute of <see cref="PipeRefusedName"/>: one of the <see cref="Splice.PipeRefusalReasons"/>.</summary>
    public const string PipeRefusedReasonTag = "splice.pipe.refused.reason";

    private static readonly KeyValuePair<string, object?> UsedPipes = new(PipeStateTag, PipeStateUsed);
    private static readonly KeyValuePair<string, object?> IdlePipes = new(PipeStateTag, PipeStateIdle);

    // OpenTelemetry's general attributes, with the values Kestrel gives them.
    public const string ServerAddressTag = "server.address";
    public const string ServerPortTag = "server.port";
    public const string NetworkTypeTag = "network.type";
    public const string NetworkTransportTag = "network.transport";

    private readonly UpDownCounter<long> _activeConnections;
    private readonly Counter<long> _acceptedConnections;
    private readonly Counter<long> _connectedConnections;
    private readonly Counter<long> _zeroCopyResponses;
    private readonly Counter<long> _zeroCopyBytes;
    private readonly Counter<long> _fallbackResponses;
    private readonly Counter<long> _prefetches;
    private readonly Counter<long> _prefetched;
    private readonly Counter<long> _uploadFallbacks;
    private readonly Counter<long> _forwardedBytes;
    private readonly Counter<long> _forwardFallbacks;
    private readonly Counter<long> _captureDropped;
    private readonly UpDownCounter<long> _pipes;
    private readonly Counter<long> _refusedPipes;

    /// <summary>
    /// The connection attributes of each listening end point, made on its first connection. A connection keeps
    /// its listener's end point, so opening and closing it costs a lookup, not an allocation; entries go with the
    /// end points when their listener is gone.
    /// </summary>
    private readonly ConditionalWeakTable<EndPoint, KeyValuePair<string, object?>[]> _connectionTags = new();

    /// <summary>Creates the instruments on a meter from <paramref name="meterFactory"/>.</summary>
    public SpliceMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        Meter meter = meterFactory.Create(MeterName);
        _activeConnections = meter.CreateUpDownCounter<long>(ActiveConnectionsName, "{connection}",
            "Number of connections open on SpliceTransport.");
        _acceptedConnections = meter.CreateCounter<long>(AcceptedConnectionsName, "{connection}",
            "Number of connections SpliceTransport accepted.");
        _connectedConnections = meter.CreateCounter<long>(ConnectedConnectionsName, "{connection}",
            "Number of outbound connections SpliceConnectionFactory opened.");
        _zeroCopyResponses = meter.CreateCounter<long>(ZeroCopyResponsesName, "{response}",
            "Number of file sends that went zero-copy (sendfile).");
        _zeroCopyBytes = meter.CreateCounter<long>(ZeroCopyBytesName, "By",
            "File bytes sent zero-copy (sendfile), never through a managed buffer.");
        _fallbackResponses = meter.CreateCounter<long>(FallbacksName, "{response}",
            "Number of file sends that went through Kestrel's normal (copying) path, by reason.");
        _prefetches = meter.CreateCounter<long>(PrefetchesName, "{chunk}",
            "Number of file chunks that were not in the page cache and were read into it off the event loops (on threads kept for that) before sendfile, so that no event loop waited for the disk.");
        _prefetched = meter.CreateCounter<long>(PrefetchedName, "By",
            "File bytes read into the page cache off the event loops before sendfile (see splice.sendfile.prefetches).");
        _uploadFallbacks = meter.CreateCounter<long>(UploadFallbacksName, "{request}",
            "Number of request bodies saved to a file through Kestrel's body reader (copied) rather than spliced, by reason.");
        _forwardedBytes = meter.CreateCounter<long>(ForwardedBytesName, "By",
            "Bytes ForwardAsync delivered from one connection to another, by mode: spliced (never in user space) or copied.");
        _forwardFallbacks = meter.CreateCounter<long>(ForwardFallbacksName, "{direction}",
            "Number of forwarded directions that copied bytes they could have spliced, by the first reason.");
        _captureDropped = meter.CreateCounter<long>(CaptureDroppedName, "By",
            "Forwarded bytes a capture dropped because it could not keep up (the forward itself never waits for a capture).");
        _pipes = meter.CreateUpDownCounter<long>(PipeCountName, "{pipe}",
            "Number of kernel pipes the splice pipe pool holds, used (rented by a transfer) or idle (pooled).");
        _refusedPipes = meter.CreateCounter<long>(PipeRefusedName, "{pipe}",
            "Number of pipe rentals refused (the caller copied instead), by reason.");
    }

    /// <summary>A connection was accepted on the listener bound to <paramref name="listenEndPoint"/>.</summary>
    internal void ConnectionOpened(EndPoint listenEndPoint)
    {
        ReadOnlySpan<KeyValuePair<string, object?>> tags = ConnectionTags(listenEndPoint);
        _acceptedConnections.Add(1, tags);
        _activeConnections.Add(1, tags);
    }

    /// <summary>
    /// An outbound connection to <paramref name="remoteEndPoint"/> was opened. Its attributes are those of the
    /// server it reached, as OpenTelemetry's client metrics name them (server.address and server.port are the
    /// peer's), and it counts among the active connections until it closes.
    /// </summary>
    internal void ConnectionConnected(EndPoint remoteEndPoint)
    {
        ReadOnlySpan<KeyValuePair<string, object?>> tags = ConnectionTags(remoteEndPoint);
        _connectedConnections.Add(1, tags);
        _activeConnections.Add(1, tags);
    }

    /// <summary>A connection of the listener bound to <paramref name="listenEndPoint"/> closed.</summary>
    internal void ConnectionClosed(EndPoint listenEndPoint) => _activeConnections.Add(-1, ConnectionTags(listenEndPoint));

    internal void ZeroCopySent(long bytes)
    {
        _zeroCopyResponses.Add(1);
        _zeroCopyBytes.Add(bytes);
    }

    /// <summary>A file chunk of <paramref name="bytes"/> was read into the page cache off the loop.</summary>
    internal void ColdFileRead(long bytes)
    {
        _prefetches.Add(1);
        _prefetched.Add(bytes);
    }

    /// <summary>A pipe was rented: taken from the pool (<paramref name="fromPool"/>) or newly made.</summary>
    internal void PipeRented(bool fromPool)
    {
        if (fromPool)
        {
            _pipes.Add(-1, IdlePipes);
        }
        _pipes.Add(1, UsedPipes);
    }

    /// <summary>A rented pipe came back: pooled (<paramref name="pooled"/>) or closed.</summary>
    internal void PipeReturned(bool pooled)
    {
        _pipes.Add(-1, UsedPipes);
        if (pooled)
        {
            _pipes.Add(1, IdlePipes);
        }
    }

    /// <summary>An idle pipe was closed (the pool was disposed).</summary>
    internal void IdlePipeClosed() => _pipes.Add(-1, IdlePipes);

    internal void PipeRefused(string reason) => _refusedPipes.Add(1, new KeyValuePair<string, object?>(PipeRefusedReasonTag, reason));

    /// <summary><paramref name="bytes"/> more were forwarded, <paramref name="spliced"/> or copied.</summary>
    internal void Forwarded(long bytes, bool spliced)
    {
        if (bytes > 0)
        {
            _forwardedBytes.Add(bytes, spliced ? SplicedBytes : CopiedBytes);
        }
    }

    internal void ForwardFellBack(string reason) => _forwardFallbacks.Add(1, new KeyValuePair<string, object?>(ForwardFallbackReasonTag, reason));

    internal void CaptureDropped(long bytes) => _captureDropped.Add(bytes);

    internal void FellBack(string reason) => _fallbackResponses.Add(1, new KeyValuePair<string, object?>(FallbackReasonTag, reason));

    internal void UploadFellBack(string reason) => _uploadFallbacks.Add(1, new KeyValuePair<string, object?>(UploadFallbackReasonTag, reason));

    private KeyValuePair<string, object?>[] ConnectionTags(EndPoint listenEndPoint) =>
        _connectionTags.TryGetValue(listenEndPoint, out KeyValuePair<string, object?>[]? tags)
            ? tags
            : _connectionTags.GetValue(listenEndPoint, CreateConnectionTags);

    /// <summary>
    /// The attributes Kestrel gives its connection metrics, from the listening end point rather than each
    /// connection's local one: a listener on 0.0.0.0 or [::] reports that address, not the one a client reached.
    /// </summary>
    internal static KeyValuePair<string, object?>[] CreateConnectionTags(EndPoint listenEndPoint) => listenEndPoint switch
    {
        IPEndPoint ip =>
        [
            new(ServerAddressTag, ip.Address.ToString()),
            new(ServerPortTag, ip.Port),
            new(NetworkTypeTag, ip.AddressFamily == AddressFamily.InterNetworkV6 ? "ipv6" : "ipv4"),
            new(NetworkTransportTag, "tcp"),
        ],
        UnixDomainSocketEndPoint unix =>
        [
            new(ServerAddressTag, unix.ToString()),
            new(NetworkTransportTag, "unix"),
        ],
        // The listener binds only the two kinds above (an inherited socket is read as one of them); this is
        // what Kestrel reports for an end point it does not know.
        _ =>
        [
            new(ServerAddressTag, listenEndPoint.ToString()),
        ],
    };
}
