# schemas/vectors/sse-frames.json through Gateway::Client::SSE: whole, byte by byte, and
# with the callback interface.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Encode qw(encode);
use Gateway::Client::SSE;
use Test::More;
use TestGateway qw(schemas_dir read_json);

my $vectors = read_json(schemas_dir() . '/vectors/sse-frames.json');
ok @{ $vectors->{cases} }, 'there are SSE vectors';

for my $case (@{ $vectors->{cases} }) {
    my $octets = encode('UTF-8', $case->{stream});

    my $whole = Gateway::Client::SSE->new;
    is_deeply [$whole->feed($octets)], $case->{events}, "$case->{description} (in one chunk)";

    my @called;
    my $bytewise = Gateway::Client::SSE->new(on_event => sub { push @called, @_ });
    $bytewise->feed($_) for split //, $octets;
    is_deeply \@called, $case->{events}, "$case->{description} (byte by byte, via on_event)";
}

subtest 'beyond the vectors' => sub {
    my $sse = Gateway::Client::SSE->new;
    my @events = $sse->feed(encode('UTF-8', "\x{FEFF}id: 7\rretry: 1500\rdata: caf\x{e9}\r\r\n"));
    is_deeply \@events, [{ id => '7', event => 'message', data => "caf\x{e9}" }],
        'a BOM, lone CR line ends and UTF-8 data';
    is $sse->last_event_id, '7', 'last_event_id';
    is $sse->retry, 1500, 'retry';

    my $split = Gateway::Client::SSE->new;
    my $euro = encode('UTF-8', "data: \x{20AC}\n\n");
    my @parts = map { $split->feed($_) } substr($euro, 0, 7), substr($euro, 7);
    is $parts[0]{data}, "\x{20AC}", 'a character split across chunks';

    is_deeply [Gateway::Client::SSE->new->feed("data\n\n")], [{ id => '', event => 'message', data => '' }],
        'a field with no colon';
    eval { Gateway::Client::SSE->new(on_event => 'nope') };
    like $@, qr/code reference/, 'croaks on a bad on_event';
};

done_testing;
