# Across languages: the Perl client calls a Python worker (math.add) and the Perl example
# worker (examples/perl/text_upper.pl, started by the harness) through the gateway.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Gateway::Client;
use Test::More;
use TestGateway qw(gateway_url need_gateway);

need_gateway();
my $gateway = Gateway::Client->new(base_url => gateway_url());

my $sum = $gateway->call('math.add', { a => 2, b => 3 }, wait => 30);
is_deeply $sum->{result}, { sum => 5 }, 'Perl client -> gateway -> Python worker: 2 + 3 = 5';

my $upper = $gateway->call('text.upper', { text => 'hello' }, wait => 30);
ok $upper->{ok}, 'text.upper succeeded' or diag explain $upper;
is $upper->{result}{text}, 'HELLO', 'Perl client -> gateway -> Perl worker: HELLO';

my $unicode = $gateway->call('text.upper', { text => "stra\x{df}e \x{e9}t\x{e9}" }, wait => 30);
is $unicode->{result}{text}, "STRASSE \x{c9}T\x{c9}", 'characters, not bytes';

my $refused = $gateway->call('text.upper', { text => 'fail' }, wait => 30);
is $refused->{ok}, 0, 'a Failure fails the job';
is $refused->{job}{status}, 'failed', 'status failed';
is $refused->{error}{code}, 'refused', 'with the code the worker chose';
like $refused->{error}{message}, qr/refuses/, 'and its message';

done_testing;
