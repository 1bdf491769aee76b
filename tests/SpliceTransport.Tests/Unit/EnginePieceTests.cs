using System.Buffers;
using System.IO.Pipelines;
using SpliceTransport.Http;
using SpliceTransport.Interop;
using SpliceTransport.Tests.Infrastructure;
using SpliceTransport.Transport;
using SpliceTransport.Files;

namespace SpliceTransport.Tests.Unit;

/// <summary>Small engine pieces on their own: descriptors, file opening, the ordered output queue.</summary>
public class EnginePieceTests
{
    [Fact]
    public void DescriptorZeroIsAValidDescriptor()
    {
        // A service manager may hand a socket over as fd 0; only -1 means "no descriptor".
        using var zero = new FileDescriptorHandle(0, ownsHandle: false);
        Assert.False(zero.IsInvalid);
        using var none = new FileDescriptorHandle(-1, ownsHandle: false);
        Assert.True(none.IsInvalid);
    }

    [Fact]
    public void FilesAreOpenedBlockingSoThatEagainCanOnlyBeTheSockets()
    {
        using var files = new TestFiles();
        string path = files.Create("blocking.bin", 100);
        using var cache = new OpenFileCache(capacity: 0, OpenFileCache.DefaultInactive);
        CachedFile? file = FileOpener.Open(Syscalls.Default, cache, path, 0, null, out long length, out string? reason);
        Assert.NotNull(file);
        Assert.Null(reason);
        Assert.Equal(100, length);
        using FileDescriptorHandle handle = file.Handle;
        int flags = LibC.fcntl(handle, LibC.F_GETFL, 0);
        Assert.True(flags >= 0);
        Assert.Equal(0, flags & LibC.O_NONBLOCK);
    }

    [Fact]
    public async Task PlaceholdersAreSlicesOfTheZeroedScratchThatNoLaterWriteReaches()
    {
        using var blocks = new PinnedMemoryPool();
        var input = new Pipe(new PipeOptions(new InputMemoryPool(blocks), minimumSegmentSize: 4096, pauseWriterThreshold: 0, useSynchronizationContext: false));

        // A pipe load's worth: one slice of the scratch, exactly that long, nothing written.
        Span<byte> placeholders = InputMemoryPool.GetPlaceholderSpan(input.Writer, 65536, out bool zeroed);
        Assert.True(zeroed);
        Assert.Equal(65536, placeholders.Length);
        input.Writer.Advance(placeholders.Length);

        // The next real bytes get a block of their own: the slice has no room left for them.
        Memory<byte> real = input.Writer.GetMemory(2048);
        Assert.False(ScratchMemory.Shared.Contains(real.Span));
        real.Span[..3].Fill(7);
        input.Writer.Advance(3);

        // Room the write head already has, or a count below a block, is a pool block the pump must zero.
        Span<byte> small = InputMemoryPool.GetPlaceholderSpan(input.Writer, 100, out zeroed);
        Assert.False(zeroed);
        Assert.False(ScratchMemory.Shared.Contains(small));
        small[..100].Clear();
        input.Writer.Advance(100);

        // More than a slice carries comes in slices.
        Span<byte> big = InputMemoryPool.GetPlaceholderSpan(input.Writer, 3 * InputMemoryPool.MaxPlaceholderSlice, out zeroed);
        Assert.True(zeroed);
        Assert.Equal(InputMemoryPool.MaxPlaceholderSlice, big.Length);
        input.Writer.Advance(big.Length);
        await input.Writer.FlushAsync();

        ReadResult read = await input.Reader.ReadAsync();
        byte[] all = read.Buffer.ToArray();
        Assert.Equal(65536 + 3 + 100 + InputMemoryPool.MaxPlaceholderSlice, all.Length);
        Assert.Equal(-1, all.AsSpan(0, 65536).IndexOfAnyExcept((byte)0));
        Assert.Equal(new byte[] { 7, 7, 7 }, all[65536..65539]);
        Assert.Equal(-1, all.AsSpan(65539).IndexOfAnyExcept((byte)0));
        input.Reader.AdvanceTo(read.Buffer.End);
        input.Writer.Complete();
        input.Reader.Complete();
        Assert.Equal(-1, ScratchMemory.Shared.GetSpan().IndexOfAnyExcept((byte)0));
    }

    [Fact]
    public async Task FilesAreQueuedAtTheirPipePositionInOrder()
    {
        var pipe = new Pipe();
        var writer = new SpliceOutputWriter(pipe.Writer, pipe.Reader);
        using var files = new TestFiles();
        using var handle = File.OpenHandle(files.Create("ordered.bin", 10));

        await writer.WriteAsync("headers-1"u8.ToArray());
        FileSegment first = writer.EnqueueFile(handle, "ordered.bin", offset: 0, count: 10);
        writer.Advance(10); // Kestrel counts the file's bytes through the writer; they are swallowed.
        // Written, not flushed through the writer: its flush would wait for the first file to be sent.
        Assert.Equal(0, writer.BytesToSwallow);
        "headers-2"u8.CopyTo(writer.GetSpan(9));
        writer.Advance(9);
        FileSegment second = writer.EnqueueFile(handle, "ordered.bin", offset: 2, count: 5);
        writer.Advance(5);

        // The pipe holds only the bytes written, and each file sits at the position of the bytes before it.
        Assert.Equal(9, first.Position);
        Assert.Equal(18, second.Position);
        Assert.Same(first, writer.PeekFile());
        writer.DequeueFile();
        Assert.Same(second, writer.PeekFile());
        await pipe.Writer.FlushAsync();
        ReadResult read = await pipe.Reader.ReadAsync();
        Assert.Equal("headers-1headers-2", System.Text.Encoding.ASCII.GetString(System.Buffers.BuffersExtensions.ToArray(read.Buffer)));

        // When the pump stops, what is queued, and whatever is queued later, completes as not sent.
        writer.StopFiles();
        Assert.False(await second.Completion);
        Assert.False(await writer.EnqueueFile(handle, "ordered.bin", 0, 1).Completion);
    }
}
