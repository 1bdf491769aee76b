using System.Net;
using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Logging;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>Outside 64-bit Linux, UseSpliceTransport changes nothing but a warning in the log.</summary>
public class UnsupportedPlatformTests
{
    private const int UnsupportedPlatformEventId = 300;

    [Fact]
    public async Task KestrelSocketsServeAndAWarningIsLogged()
    {
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/", () => "hello"),
            configureTransport: null,
            configureBuilder: null,
            urls: null,
            useSplice: true,
            platformCheck: static () => false);
        using var client = host.CreateClient();

        using var response = await client.GetAsync("/");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("hello", await response.Content.ReadAsStringAsync());
        Assert.Equal("other", Assert.Single(response.Headers.GetValues(SpliceTestHost.TransportHeader)));
        Assert.Equal(0, host.Metrics.AcceptedConnections);
        Assert.DoesNotContain(host.Services.GetServices<IConnectionListenerFactory>(), factory => factory is SpliceConnectionListenerFactory);

        LogCollector.Entry warning = Assert.Single(host.Logs.Entries, e => e.EventId.Id == UnsupportedPlatformEventId);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Equal("SpliceTransport", warning.Category);
        Assert.Contains("64-bit Linux", warning.Message);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task OnASupportedPlatformNoWarningIsLogged()
    {
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/", () => "hello"),
            configureTransport: null,
            configureBuilder: null,
            urls: null,
            useSplice: true,
            platformCheck: static () => true);
        using var client = host.CreateClient();

        using var response = await client.GetAsync("/");

        TransportAssert.ServedBySplice(response);
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId.Id == UnsupportedPlatformEventId);
    }
}
