using System.Diagnostics;
using System.Diagnostics.Metrics;

namespace SpliceTransport;

/// <summary>
/// The transport's <see cref="System.Diagnostics.Metrics"/> instruments, on the meter
/// <see cref="MeterName"/> created through the host's <see cref="IMeterFactory"/>.
/// </summary>
internal sealed class SpliceMetrics
{
    /// <summary>The name of the meter that holds every SpliceTransport instrument.</summary>
    public const string MeterName = "SpliceTransport";

    private readonly UpDownCounter<long> _activeConnections;
    private readonly Counter<long> _acceptedConnections;
    private readonly Counter<long> _zeroCopyResponses;
    private readonly Counter<long> _zeroCopyBytes;
    private readonly Counter<long> _fallbackResponses;

    /// <summary>Creates the instruments on a meter from <paramref name="meterFactory"/>.</summary>
    public SpliceMetrics(IMeterFactory meterFactory)
    {
        ArgumentNullException.ThrowIfNull(meterFactory);
        Meter meter = meterFactory.Create(MeterName);
        _activeConnections = meter.CreateUpDownCounter<long>("splice.connections.active", "{connection}", "Connections open on SpliceTransport.");
        _acceptedConnections = meter.CreateCounter<long>("splice.connections.accepted", "{connection}", "Connections accepted by SpliceTransport.");
        _zeroCopyResponses = meter.CreateCounter<long>("splice.sendfile.responses", "{response}", "File sends that went zero-copy (sendfile).");
        _zeroCopyBytes = meter.CreateCounter<long>("splice.sendfile.bytes", "By", "File bytes sent zero-copy (sendfile), never through a managed buffer.");
        _fallbackResponses = meter.CreateCounter<long>("splice.sendfile.fallbacks", "{response}", "File sends that went through Kestrel's normal path, tagged with the reason.");
    }

    internal void ConnectionOpened()
    {
        _acceptedConnections.Add(1);
        _activeConnections.Add(1);
    }

    internal void ConnectionClosed() => _activeConnections.Add(-1);

    internal void ZeroCopySent(long bytes)
    {
        _zeroCopyResponses.Add(1);
        _zeroCopyBytes.Add(bytes);
    }

    internal void FellBack(string reason) => _fallbackResponses.Add(1, new KeyValuePair<string, object?>("reason", reason));
}
