using System.Net;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>IPv6 loopback and dual-mode [::] endpoints.</summary>
public class IPv6Tests
{
    private static void MapEcho(WebApplication app) =>
        app.MapGet("/who", (HttpContext context) =>
            $"{context.Connection.RemoteIpAddress}|{context.Connection.LocalIpAddress}|{context.Connection.LocalPort}");

    private static HttpClient CreateClient(string baseAddress) => new()
    {
        BaseAddress = new Uri(baseAddress),
        Timeout = TimeSpan.FromSeconds(60),
    };

    [Fact]
    public async Task IPv6LoopbackIsServed()
    {
        await using var host = await SpliceTestHost.StartAsync(MapEcho, urls: ["http://[::1]:0"]);
        Assert.StartsWith("http://[::1]:", host.Addresses[0]);
        using var client = CreateClient($"http://[::1]:{host.Port}/");

        using var response = await client.GetAsync("/who");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal($"::1|::1|{host.Port}", await response.Content.ReadAsStringAsync());
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task IPv6LoopbackDoesNotServeIPv4()
    {
        await using var host = await SpliceTestHost.StartAsync(MapEcho, urls: ["http://[::1]:0"]);
        // A specific IPv6 address is not dual-mode: 127.0.0.1 on the same port reaches nobody.
        using var client = CreateClient($"http://127.0.0.1:{host.Port}/");
        await Assert.ThrowsAsync<HttpRequestException>(() => client.GetAsync("/who"));
        Assert.Equal(0, host.Metrics.AcceptedConnections);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task DualModeAnyServesIPv4AndIPv6(int threadCount)
    {
        await using var host = await SpliceTestHost.StartAsync(MapEcho, o => o.ThreadCount = threadCount, urls: ["http://[::]:0"]);
        Assert.StartsWith("http://[::]:", host.Addresses[0]);

        using (var v4 = CreateClient($"http://127.0.0.1:{host.Port}/"))
        using (var response = await v4.GetAsync("/who"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            // IPv4 clients of a dual-mode socket appear as IPv4-mapped IPv6 addresses, as with Kestrel's sockets.
            Assert.Equal($"::ffff:127.0.0.1|::ffff:127.0.0.1|{host.Port}", await response.Content.ReadAsStringAsync());
        }
        using (var v6 = CreateClient($"http://[::1]:{host.Port}/"))
        using (var response = await v6.GetAsync("/who"))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            Assert.Equal($"::1|::1|{host.Port}", await response.Content.ReadAsStringAsync());
        }

        Assert.Equal(2, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
