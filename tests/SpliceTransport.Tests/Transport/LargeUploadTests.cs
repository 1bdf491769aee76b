using System.Net;
using System.Security.Cryptography;
using SpliceTransport.Tests.Infrastructure;

namespace SpliceTransport.Tests.Transport;

/// <summary>A 100 MB request body crosses the transport intact (the receive pump under sustained load and MaxReadBufferSize).</summary>
public class LargeUploadTests
{
    private const long UploadSize = 100L * 1024 * 1024;

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task HundredMegabyteUploadArrivesIntact(bool withContentLength)
    {
        await using var host = await SpliceTestHost.StartAsync(
            app => app.MapPost("/sha256", async context =>
            {
                using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
                byte[] buffer = new byte[64 * 1024];
                long total = 0;
                int n;
                while ((n = await context.Request.Body.ReadAsync(buffer)) > 0)
                {
                    hash.AppendData(buffer, 0, n);
                    total += n;
                }
                await context.Response.WriteAsync($"{total}:{Convert.ToHexString(hash.GetHashAndReset())}");
            }),
            configureBuilder: builder => builder.WebHost.ConfigureKestrel(kestrel => kestrel.Limits.MaxRequestBodySize = null));
        using var client = host.CreateClient();

        using var upload = new GeneratedBody(UploadSize, seed: 3);
        var content = new StreamContent(upload, 64 * 1024);
        if (withContentLength)
        {
            content.Headers.ContentLength = UploadSize;
        }
        using var response = await client.PostAsync("/sha256", content);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        TransportAssert.ServedBySplice(response);
        Assert.Equal($"{UploadSize}:{upload.Sha256()}", await response.Content.ReadAsStringAsync());
        host.Logs.AssertNoErrors();
    }
}
