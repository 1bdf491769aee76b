using System.Net;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>HTTP/1.1 persistent connections: many requests, one accepted connection.</summary>
public class KeepAliveTests
{
    private const int RequestCount = 50;

    [Fact]
    public async Task ManySequentialRequestsShareOneConnection()
    {
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/n/{n:int}", (int n, HttpContext context) => $"{n}:{context.Connection.Id}"));
        using var client = host.CreateClient();

        string? connectionId = null;
        for (int i = 0; i < RequestCount; i++)
        {
            using var response = await client.GetAsync($"/n/{i}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            string[] body = (await response.Content.ReadAsStringAsync()).Split(':');
            Assert.Equal(i.ToString(), body[0]);
            connectionId ??= body[1];
            Assert.Equal(connectionId, body[1]);
        }

        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task RequestsWithBodiesKeepTheConnection()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapPost("/echo", async context =>
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer);
            await context.Response.Body.WriteAsync(buffer.ToArray());
        }));
        using var client = host.CreateClient();

        var random = new Random(42);
        for (int i = 0; i < 10; i++)
        {
            byte[] payload = new byte[random.Next(1, 300_000)];
            random.NextBytes(payload);
            using var response = await client.PostAsync("/echo", new ByteArrayContent(payload));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            TransportAssert.ServedBySplice(response);
            Assert.Equal(TestFiles.Sha256(payload), TestFiles.Sha256(await response.Content.ReadAsByteArrayAsync()));
        }

        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
