using Microsoft.AspNetCore.Connections;
using Microsoft.Extensions.Options;
using SpliceTransport.Http;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>UseSpliceTransport() called more than once registers the transport once and applies every call's options.</summary>
public class RegistrationTests
{
    private const int FirstThreadCount = 2;
    private const int SecondThreadCount = 3;

    [Fact]
    public async Task CalledTwiceRegistersOnceAndAppliesBothOptionDelegatesInOrder()
    {
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapGet("/", (HttpContext context) => context.Features.Get<ISpliceConnectionFeature>()!.EventLoopIndex),
            configureTransport: o =>
            {
                o.ThreadCount = FirstThreadCount;
                o.ReusePort = false;
            },
            configureBuilder: builder => builder.WebHost.UseSpliceTransport(o =>
            {
                Assert.Equal(FirstThreadCount, o.ThreadCount); // The first call's delegate ran before this one.
                o.ThreadCount = SecondThreadCount;
                o.NoDelay = false;
            }));

        Assert.Single(host.Services.GetServices<IConnectionListenerFactory>(), factory => factory is SpliceConnectionListenerFactory);
        Assert.Single(host.Services.GetServices<IStartupFilter>(), filter => filter is SpliceStartupFilter);
        SpliceTransportOptions options = host.Services.GetRequiredService<IOptions<SpliceTransportOptions>>().Value;
        Assert.Equal(SecondThreadCount, options.ThreadCount);
        Assert.False(options.ReusePort);
        Assert.False(options.NoDelay);

        // The running transport has the second call's loop count: with ReusePort off (the first call's), one
        // acceptor hands connections to the loops round-robin, so as many connections reach every loop once.
        var loopIndexes = new HashSet<int>();
        for (int i = 0; i < SecondThreadCount; i++)
        {
            using HttpClient client = host.CreateClient(); // Its own connection pool: a new connection.
            using var response = await client.GetAsync("/");
            TransportAssert.ServedBySplice(response);
            loopIndexes.Add(int.Parse(await response.Content.ReadAsStringAsync()));
        }
        Assert.Equal(Enumerable.Range(0, SecondThreadCount), loopIndexes.Order());
        Assert.Equal(SecondThreadCount, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
