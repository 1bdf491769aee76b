using System.Diagnostics.Metrics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using SpliceTransport.Http;
using SpliceTransport.Tests.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>
/// The instruments as a user's MeterListener (or OpenTelemetry) sees them on real requests: names, types,
/// units, and the tags of every measurement.
/// </summary>
public class MetricsTests(FileFixture files) : IClassFixture<FileFixture>
{
    private const long FileSize = 64 * 1024 + 3;
    private const int AllocationFreeRounds = 1000;

    private string File => files.Get("metrics/file.bin", FileSize);

    private static void MapFile(WebApplication app, string path) =>
        app.MapGet("/file", (HttpContext context) => context.Response.SendFileAsync(path, context.RequestAborted));

    [Fact]
    public async Task EveryInstrumentHasItsNameTypeAndUnit()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/", () => "ok"));

        Assert.Equal(
            ["splice.connection.accepted", "splice.connection.active", "splice.connection.connected", "splice.forward.bytes", "splice.forward.capture.dropped", "splice.forward.fallbacks", "splice.pipe.count", "splice.pipe.refused", "splice.sendfile.fallbacks", "splice.sendfile.prefetched", "splice.sendfile.prefetches", "splice.sendfile.responses", "splice.sendfile.sent", "splice.upload.fallbacks"],
            host.Metrics.Instruments.Keys.Order(StringComparer.Ordinal));
        AssertInstrument<UpDownCounter<long>>(host, "splice.connection.active", "{connection}");
        AssertInstrument<Counter<long>>(host, "splice.connection.accepted", "{connection}");
        AssertInstrument<Counter<long>>(host, "splice.connection.connected", "{connection}");
        AssertInstrument<Counter<long>>(host, "splice.sendfile.responses", "{response}");
        AssertInstrument<Counter<long>>(host, "splice.sendfile.sent", "By");
        AssertInstrument<Counter<long>>(host, "splice.sendfile.fallbacks", "{response}");
        AssertInstrument<Counter<long>>(host, "splice.sendfile.prefetches", "{chunk}");
        AssertInstrument<Counter<long>>(host, "splice.sendfile.prefetched", "By");
        AssertInstrument<UpDownCounter<long>>(host, "splice.pipe.count", "{pipe}");
        AssertInstrument<Counter<long>>(host, "splice.pipe.refused", "{pipe}");
        AssertInstrument<Counter<long>>(host, "splice.upload.fallbacks", "{request}");
        AssertInstrument<Counter<long>>(host, "splice.forward.bytes", "By");
        AssertInstrument<Counter<long>>(host, "splice.forward.fallbacks", "{direction}");
        AssertInstrument<Counter<long>>(host, "splice.forward.capture.dropped", "By");
    }

    [Theory]
    [InlineData("http://127.0.0.1:0", "127.0.0.1", "ipv4")]
    [InlineData("http://[::1]:0", "::1", "ipv6")]
    public async Task TcpConnectionsCarryTheListenersEndPointAndFilesCarryNoTags(string url, string address, string networkType)
    {
        string path = File;
        await using var host = await SpliceTestHost.StartAsync(app => MapFile(app, path), urls: [url]);
        using (HttpClient client = host.CreateClient())
        {
            using var response = await client.GetAsync("/file").WaitAsync(Waits.Response);
            TransportAssert.ServedBySplice(response);
            Assert.Equal(TestFiles.Sha256(path), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        }
        await Bytes.EventuallyAsync(() => host.Metrics.ZeroCopyResponses == 1, "the file went zero-copy");

        var endPoint = new Dictionary<string, object?>
        {
            ["server.address"] = address,
            ["server.port"] = host.Port,
            ["network.type"] = networkType,
            ["network.transport"] = "tcp",
        };
        await AssertConnectionMeasuredAsync(host, endPoint);
        Assert.Empty(Assert.Single(host.Metrics.TagsOf("splice.sendfile.responses")));
        Assert.Empty(Assert.Single(host.Metrics.TagsOf("splice.sendfile.sent")));
        await host.Metrics.AssertEventuallyAsync(FileSize, m => m.ZeroCopyBytes);
        Assert.Empty(host.Metrics.TagsOf("splice.sendfile.fallbacks"));
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task UnixSocketConnectionsCarryTheSocketPath()
    {
        string socketPath = Path.Combine(files.Root, "metrics.sock");
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/", () => "ok"), urls: [$"http://unix:{socketPath}"]);
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(new UnixDomainSocketEndPoint(socketPath), timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/"));
            RawHttpResponse response = await connection.ReadResponseAsync();
            response.AssertServedBySplice();
        }

        await AssertConnectionMeasuredAsync(host, new Dictionary<string, object?>
        {
            ["server.address"] = socketPath,
            ["network.transport"] = "unix",
        });
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task AFallbackCarriesItsReasonInSnakeCase()
    {
        string path = File;
        byte[] prefix = Encoding.ASCII.GetBytes("prefix;");
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/file", async (HttpContext context) =>
        {
            // Started without Content-Length: chunked, so the file must be framed by Kestrel.
            await context.Response.Body.WriteAsync(prefix);
            await context.Response.Body.FlushAsync();
            await context.Response.SendFileAsync(path);
        }));
        await using (RawHttpConnection connection = await RawHttpConnection.ConnectAsync(host.Port, timeouts: Waits.Raw))
        {
            await connection.SendAsync(RawHttpConnection.Get("/file"));
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.Equal("chunked", response.Header("Transfer-Encoding"));
        }

        await Bytes.EventuallyAsync(() => host.Metrics.AllFallbacks == 1, "one fallback");
        KeyValuePair<string, object?> reason = Assert.Single(Assert.Single(host.Metrics.TagsOf("splice.sendfile.fallbacks")));
        Assert.Equal(new KeyValuePair<string, object?>("splice.sendfile.fallback.reason", "chunked"), reason);
        Assert.Equal(0, host.Metrics.ZeroCopyResponses);
    }

    /// <summary>Every reason is an OpenTelemetry attribute value: lower_snake_case.</summary>
    [Fact]
    public void EveryFallbackReasonIsLowerSnakeCase()
    {
        string[] reasons = typeof(FallbackReasons).GetFields().Select(field => (string)field.GetRawConstantValue()!).ToArray();
        Assert.NotEmpty(reasons);
        Assert.All(reasons, reason => Assert.Matches("^[a-z]+(_[a-z]+)*$", reason));
    }

    /// <summary>Opening and closing a connection allocates nothing once its listener's tags exist.</summary>
    [Fact]
    public void ConnectionMeasurementsDoNotAllocate()
    {
        using ServiceProvider services = new ServiceCollection().AddMetrics().BuildServiceProvider();
        IMeterFactory meterFactory = services.GetRequiredService<IMeterFactory>();
        var metrics = new SpliceMetrics(meterFactory);
        var listenEndPoint = new IPEndPoint(IPAddress.Loopback, 8080);
        long measurements = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            // This test's meter only: hosts of tests running in parallel measure their connections on meters of
            // the same name (CI counted 12,069 measurements for 12,000 once).
            if (instrument.Meter.Name == SpliceMetrics.MeterName && ReferenceEquals(instrument.Meter.Scope, meterFactory))
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, _, tags, _) => measurements += tags.Length);
        listener.Start();
        metrics.ConnectionOpened(listenEndPoint); // Makes the listener's tags.
        metrics.ConnectionClosed(listenEndPoint);
        measurements = 0;

        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < AllocationFreeRounds; i++)
        {
            metrics.ConnectionOpened(listenEndPoint);
            metrics.ConnectionClosed(listenEndPoint);
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, allocated);
        // Three measurements a round (accepted, active up, active down), each with the four end-point tags.
        Assert.Equal(AllocationFreeRounds * 3 * 4, measurements);
    }

    private static void AssertInstrument<T>(SpliceTestHost host, string name, string unit) where T : Instrument
    {
        Instrument instrument = host.Metrics.Instruments[name];
        Assert.IsType<T>(instrument);
        Assert.Equal(unit, instrument.Unit);
        Assert.False(string.IsNullOrEmpty(instrument.Description), $"{name} has no description.");
    }

    /// <summary>One connection: accepted once and counted active up and down, each time with exactly <paramref name="tags"/>.</summary>
    private static async Task AssertConnectionMeasuredAsync(SpliceTestHost host, Dictionary<string, object?> tags)
    {
        await Bytes.EventuallyAsync(() => host.Metrics.TagsOf("splice.connection.active").Count == 2, "the connection closed");
        Assert.Equal(0, host.Metrics.ActiveConnections);
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        Assert.Equal(tags, Assert.Single(host.Metrics.TagsOf("splice.connection.accepted")).ToDictionary());
        Assert.All(host.Metrics.TagsOf("splice.connection.active"), measured => Assert.Equal(tags, measured.ToDictionary()));
    }
}
