using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Microsoft.Extensions.DependencyInjection;

namespace SpliceTransport.Tests.Infrastructure;

/// <summary>
/// Sums the SpliceTransport counters of one host (its own IMeterFactory scope), so that tests running in
/// parallel do not see each other's measurements, and keeps the instruments and every measurement's tags.
/// </summary>
public sealed class MetricsRecorder : IDisposable
{
    private readonly MeterListener _listener = new();
    private readonly ConcurrentDictionary<string, long> _totals = new();
    private readonly ConcurrentDictionary<string, Instrument> _instruments = new();
    private readonly ConcurrentQueue<(string Instrument, KeyValuePair<string, object?>[] Tags)> _measurements = new();

    public MetricsRecorder(IServiceProvider services)
    {
        object scope = services.GetRequiredService<IMeterFactory>();
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name == SpliceMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, scope))
            {
                _instruments[instrument.Name] = instrument;
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            _totals.AddOrUpdate(instrument.Name, value, (_, total) => total + value);
            _measurements.Enqueue((instrument.Name, tags.ToArray()));
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                string key = $"{instrument.Name}[{tag.Key}={tag.Value}]";
                _totals.AddOrUpdate(key, value, (_, total) => total + value);
            }
        });
        _listener.Start();
    }

    /// <summary>The SpliceTransport instruments published on this host's meter, by name.</summary>
    public IReadOnlyDictionary<string, Instrument> Instruments => _instruments;

    /// <summary>The tags of every measurement of <paramref name="instrument"/> so far, in order.</summary>
    public IReadOnlyList<KeyValuePair<string, object?>[]> TagsOf(string instrument) =>
        _measurements.Where(m => m.Instrument == instrument).Select(m => m.Tags).ToList();

    /// <summary>The total of an instrument, e.g. "splice.sendfile.responses".</summary>
    public long Total(string instrument) => _totals.TryGetValue(instrument, out long value) ? value : 0;

    /// <summary>The total of an instrument for one tag value, e.g. ("splice.sendfile.fallbacks", "splice.sendfile.fallback.reason", "tls").</summary>
    public long Total(string instrument, string tag, string value) => Total($"{instrument}[{tag}={value}]");

    public long ZeroCopyResponses => Total("splice.sendfile.responses");

    public long ZeroCopyBytes => Total("splice.sendfile.sent");

    public long Fallbacks(string reason) => Total("splice.sendfile.fallbacks", "splice.sendfile.fallback.reason", reason);

    public long AllFallbacks => Total("splice.sendfile.fallbacks");

    public long Prefetches => Total("splice.sendfile.prefetches");

    public long PrefetchedBytes => Total("splice.sendfile.prefetched");

    public long AcceptedConnections => Total("splice.connection.accepted");

    public long ActiveConnections => Total("splice.connection.active");

    /// <summary>How long <see cref="AssertEventuallyAsync"/> waits for a count to reach its expected value.</summary>
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Asserts that a count reaches <paramref name="expected"/>, waiting for it up to <see cref="SettleTimeout"/>.
    /// A file send is counted when the app's SendFileAsync completes, which may be just after the client has read
    /// the last byte: reading the count at once races the server, and lost that race on a loaded CI machine.
    /// Counters only grow, so a count past the expected value fails as soon as the wait ends.
    /// </summary>
    public async Task AssertEventuallyAsync(long expected, Func<MetricsRecorder, long> read, [CallerArgumentExpression(nameof(read))] string? what = null)
    {
        var waited = Stopwatch.StartNew();
        await Poll.UntilAsync(() => read(this) == expected, SettleTimeout);
        long actual = read(this);
        Assert.True(actual == expected, $"{what}: expected {expected}, was {actual} after {waited.Elapsed.TotalSeconds:F1} s.");
    }

    public void Dispose() => _listener.Dispose();
}
