using System.Net;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

public class SmokeTests
{
    [Fact]
    public async Task PlaintextIsServedBySpliceTransport()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapGet("/plaintext", () => "Hello, World!"));
        using var client = host.CreateClient();

        for (int i = 0; i < 3; i++)
        {
            using var response = await client.GetAsync("/plaintext");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            Assert.Equal("Hello, World!", await response.Content.ReadAsStringAsync());
        }
        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
