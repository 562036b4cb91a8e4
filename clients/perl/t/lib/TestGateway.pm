package TestGateway;

# Helpers shared by the tests: where the gateway and the schemas are, and reading JSON.

use strict;
use warnings;

use Exporter 'import';
use JSON::PP ();
use Test::More ();

our @EXPORT_OK = qw(gateway_url schemas_dir read_json need_gateway);

sub gateway_url { $ENV{GATEWAY_URL} }

# Skips the whole test file when there are none: a copy of clients/perl outside the
# repository (cpanm, a CPAN-style build) has no schemas/ beside it.
sub schemas_dir {
    return $ENV{GATEWAY_SCHEMAS} if $ENV{GATEWAY_SCHEMAS};
    require FindBin;
    my $dir = "$FindBin::Bin/../../../schemas";    # the repository's own, run from clients/perl
    Test::More::plan(skip_all => 'no schemas/ beside clients/perl: set GATEWAY_SCHEMAS') unless -d "$dir/vectors";
    return $dir;
}

sub read_json {
    my ($path) = @_;
    open my $file, '<:raw', $path or die "cannot read $path: $!";
    local $/;
    return JSON::PP->new->utf8->decode(<$file>);
}

# Skip the whole test file unless a running gateway is given.
sub need_gateway {
    Test::More::plan(skip_all => 'set GATEWAY_URL to run against a gateway') unless gateway_url();
}

1;
