using System.Net;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>Port 0 binds an ephemeral port, and IServerAddressesFeature reports the real one.</summary>
public class PortZeroTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public async Task TheRealPortIsReportedForEveryPortZeroEndpoint(int threadCount)
    {
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/port", (HttpContext context) => context.Connection.LocalPort.ToString()),
            o => o.ThreadCount = threadCount,
            urls: ["http://127.0.0.1:0", "http://[::1]:0"]);

        IServerAddressesFeature feature = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!;
        Assert.Equal(2, feature.Addresses.Count);
        var ports = new HashSet<int>();
        foreach (string address in feature.Addresses)
        {
            var uri = new Uri(address);
            Assert.NotEqual(0, uri.Port);
            Assert.DoesNotContain(":0/", address + "/");
            ports.Add(uri.Port);

            // Several connections, so that with several loops (SO_REUSEPORT) every listening socket has its
            // chance to accept: all of them must be on the reported port.
            for (int i = 0; i < 8; i++)
            {
                using var client = new HttpClient { BaseAddress = uri, Timeout = TimeSpan.FromSeconds(60) };
                using var response = await client.GetAsync("/port");
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                TransportAssert.ServedBySplice(response);
                Assert.Equal(uri.Port.ToString(), await response.Content.ReadAsStringAsync());
            }
        }
        Assert.Equal(2, ports.Count);
        Assert.Equal(16, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
