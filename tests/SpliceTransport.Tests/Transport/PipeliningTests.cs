using System.Text;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>HTTP/1.1 pipelining: many requests arrive in one segment; responses come back in order.</summary>
public class PipeliningTests
{
    private const int RequestCount = 20;

    [Fact]
    public async Task TwentyPipelinedRequestsAreAnsweredInOrder()
    {
        await using var host = await SpliceTestHost.StartAsync(app =>
            app.MapGet("/n/{n:int}", (int n) => $"response {n}"));

        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        var requests = new StringBuilder();
        for (int i = 0; i < RequestCount; i++)
        {
            requests.Append($"GET /n/{i} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        }
        // One send: the server finds all twenty requests in its first receive.
        await connection.SendAsync(requests.ToString());

        for (int i = 0; i < RequestCount; i++)
        {
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            response.AssertServedBySplice();
            Assert.Equal($"response {i}", response.BodyText);
        }

        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }

    [Fact]
    public async Task PipelinedRequestsWithBodiesAreAnsweredInOrder()
    {
        await using var host = await SpliceTestHost.StartAsync(app => app.MapPost("/echo", async context =>
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer);
            await context.Response.Body.WriteAsync(buffer.ToArray());
        }));

        using var connection = await RawHttpConnection.ConnectAsync(host.Port);
        var all = new MemoryStream();
        var bodies = new List<string>();
        for (int i = 0; i < RequestCount; i++)
        {
            string body = new string((char)('a' + i), 1000 * (i + 1));
            bodies.Add(body);
            all.Write(Encoding.ASCII.GetBytes($"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: {body.Length}\r\n\r\n{body}"));
        }
        await connection.SendAsync(all.ToArray());

        for (int i = 0; i < RequestCount; i++)
        {
            RawHttpResponse response = await connection.ReadResponseAsync();
            Assert.Equal(200, response.StatusCode);
            response.AssertServedBySplice();
            Assert.Equal(TestFiles.Sha256(Encoding.ASCII.GetBytes(bodies[i])), TestFiles.Sha256(response.Body));
        }

        Assert.Equal(1, host.Metrics.AcceptedConnections);
        host.Logs.AssertNoErrors();
    }
}
