using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Microsoft.Extensions.DependencyInjection;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// Sums the SpliceTransport counters of one host (its own IMeterFactory scope), so that tests running in
/// parallel do not see each other's measurements.
/// </summary>
public sealed class MetricsRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, long> _totals = new();

    public MetricsRecorder(IServiceProvider services)
    {
        object scope = services.GetRequiredService<IMeterFactory>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == SpliceMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, scope))
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            _totals.AddOrUpdate(instrument.Name, value, (_, total) => total + value);
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                string key = $"{instrument.Name}[{tag.Key}={tag.Value}]";
                _totals.AddOrUpdate(key, value, (_, total) => total + value);
            }
        });
        _listener.Start();
    }

    /// <summary>The total of an instrument, e.g. "splice.sendfile.responses".</summary>
    public long Total(string instrument) => _totals.TryGetValue(instrument, out long value) ? value : 0;

    /// <summary>The total of an instrument for one tag value, e.g. ("splice.sendfile.fallbacks", "reason", "tls").</summary>
    public long Total(string instrument, string tag, string value) => Total($"{instrument}[{tag}={value}]");

    public long ZeroCopyResponses => Total("splice.sendfile.responses");

    public long ZeroCopyBytes => Total("splice.sendfile.bytes");

    public long Fallbacks(string reason) => Total("splice.sendfile.fallbacks", "reason", reason);

    public long AllFallbacks => Total("splice.sendfile.fallbacks");

    public long AcceptedConnections => Total("splice.connections.accepted");

    public void Dispose() => _listener.Dispose();
}
