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

        using var upload = new GeneratedStream(UploadSize, seed: 3);
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

    /// <summary>A read-only, non-seekable stream of pseudo-random bytes that hashes what it hands out.</summary>
    private sealed class GeneratedStream(long length, int seed) : Stream
    {
        private readonly Random _random = new(seed);
        private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        private long _remaining = length;
        private string? _sha256;

        /// <summary>The hash of every byte handed out; known once the stream has been read to its end.</summary>
        public string Sha256() => _sha256 ?? throw new InvalidOperationException($"{_remaining} bytes were not read.");

        public override int Read(Span<byte> buffer)
        {
            int n = (int)Math.Min(buffer.Length, _remaining);
            _random.NextBytes(buffer[..n]);
            _hash.AppendData(buffer[..n]);
            _remaining -= n;
            if (_remaining == 0 && _sha256 is null)
            {
                _sha256 = Convert.ToHexString(_hash.GetHashAndReset());
            }
            return n;
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => new(Read(buffer.Span));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) => Task.FromResult(Read(buffer, offset, count));

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            _hash.Dispose();
            base.Dispose(disposing);
        }
    }
}
