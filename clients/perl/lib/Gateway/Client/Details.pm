package Gateway::Client::Details;

# Where a body breaks a schema, named exactly as the gateway names it (paths and their
# order; the messages are this module's own). JSON::Validator decides whether a body is
# valid, but its error list cannot be mapped onto the gateway's: it reports a missing
# property at the property, stops at an unexpected property, and lists an anyOf's failed
# branches at their own places. So this walks the schema the way Python's jsonschema does.
# Core modules only.

use strict;
use warnings;

use B ();
use Exporter qw(import);
use Scalar::Util qw(blessed);

our @EXPORT_OK = qw(validation_details $MAX_ERRORS_EXAMINED $MAX_DETAILS);

our $MAX_ERRORS_EXAMINED = 100;
our $MAX_DETAILS         = 20;

my %WEAK = map { $_ => 1 } qw(anyOf oneOf);

# The walk's keyword order (a Perl hash has none of its own).
my @KEYWORDS = qw(
    type enum const multipleOf maximum exclusiveMaximum minimum exclusiveMinimum
    maxLength minLength pattern items additionalItems maxItems minItems uniqueItems
    contains maxProperties minProperties required properties patternProperties
    additionalProperties dependencies propertyNames if allOf anyOf oneOf not
);

# Thrown (and caught in validation_details) to stop the walk once enough errors are seen.
my $ENOUGH = \'enough';

sub validation_details {
    my ($schema, $data, $root) = @_;
    $root //= $schema;
    my @examined;
    my $collect = sub {
        push @examined, $_[0];
        die $ENOUGH if @examined >= $MAX_ERRORS_EXAMINED;    # the rest is never computed
    };
    my $finished = eval { _walk($schema, $data, [], $root, $collect); 1 };
    die $@ if !$finished && !(ref $@ && $@ == $ENOUGH);

    my @order = sort { _compare($examined[$a], $examined[$b]) || $a <=> $b } 0 .. $#examined;
    splice @order, $MAX_DETAILS if @order > $MAX_DETAILS;
    return map { { path => _pointer($examined[$_]{path}), message => $examined[$_]{message} } } @order;
}

# Most relevant first: shallower paths, then document order, then weak keywords last.
sub _compare {
    my ($x, $y) = @_;
    my ($p, $q) = ($x->{path}, $y->{path});
    return @$p <=> @$q if @$p != @$q;
    for my $i (0 .. $#$p) {
        my $order = _compare_segments($p->[$i], $q->[$i]);
        return $order if $order;
    }
    return ($WEAK{ $x->{keyword} } ? 1 : 0) <=> ($WEAK{ $y->{keyword} } ? 1 : 0);
}

# Array indices as numbers (first), names by code point: as the gateway and JS compare.
sub _compare_segments {
    my ($x, $y) = @_;
    my $index = qr/\A(?:0|[1-9][0-9]*)\z/;
    my ($xi, $yi) = ($x =~ $index ? 1 : 0, $y =~ $index ? 1 : 0);
    return length($x) <=> length($y) || $x cmp $y if $xi && $yi;
    return $yi <=> $xi if $xi != $yi;
    return $x cmp $y;
}

sub _pointer {
    my ($path) = @_;
    return join '', map { (my $p = $_) =~ s/~/~0/g; $p =~ s{/}{~1}g; "/$p" } @$path;
}

sub _is_valid {
    my ($schema, $data, $root) = @_;
    my $ok = eval { _walk($schema, $data, [], $root, sub { die $ENOUGH }); 1 };
    die $@ if !$ok && !(ref $@ && $@ == $ENOUGH);
    return $ok;
}

# The JSON type of a value as JSON::PP would encode it.
sub _type {
    my ($value) = @_;
    return 'null' unless defined $value;
    return 'boolean' if blessed $value && $value->isa('JSON::PP::Boolean');
    my $ref = ref $value;
    return 'object' if $ref eq 'HASH';
    return 'array'  if $ref eq 'ARRAY';
    return 'other'  if $ref;
    my $flags = B::svref_2object(\$value)->FLAGS;
    return 'number' if $flags & (B::SVp_IOK | B::SVp_NOK) && !($flags & B::SVp_POK);
    return 'string';
}

sub _has_type {
    my ($value, $type) = @_;
    my $actual = _type($value);
    return $actual eq 'number' && $value == int $value if $type eq 'integer';
    return $actual eq $type;
}

sub _equal {
    my ($x, $y) = @_;
    my $type = _type($x);
    return 0 if $type ne _type($y);
    return @$x == @$y && !grep { !_equal($x->[$_], $y->[$_]) } 0 .. $#$x if $type eq 'array';
    if ($type eq 'object') {
        return 0 unless keys %$x == keys %$y;
        return !grep { !exists $y->{$_} || !_equal($x->{$_}, $y->{$_}) } keys %$x;
    }
    return 1 if $type eq 'null';
    return ($x ? 1 : 0) == ($y ? 1 : 0) if $type eq 'boolean';
    return $x == $y if $type eq 'number';
    return $x eq $y;
}

sub _resolve {
    my ($root, $ref) = @_;
    die "only local \$refs resolve here, not $ref\n" unless $ref =~ m{\A#(.*)\z};
    my $node = $root;
    for my $raw (grep { length } split m{/}, $1) {
        (my $key = $raw) =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
        $key =~ s/~1/\//g;
        $key =~ s/~0/~/g;
        die "\$ref $ref points nowhere\n" unless ref $node eq 'HASH' && exists $node->{$key};
        $node = $node->{$key};
    }
    return $node;
}

sub _chars { scalar(() = $_[0] =~ /./gs) }

# Report each error of $data (at $path) against $schema to $report, in the walk's order.
sub _walk {
    my ($schema, $data, $path, $root, $report) = @_;
    my $error = sub { $report->({ path => $path, keyword => $_[0], message => $_[1] }) };
    if (blessed $schema && $schema->isa('JSON::PP::Boolean')) {
        $error->(false => 'no value is allowed here') unless $schema;
        return;
    }
    return unless ref $schema eq 'HASH';
    # Draft-07: a $ref's siblings are ignored.
    return _walk(_resolve($root, $schema->{'$ref'}), $data, $path, $root, $report) if defined $schema->{'$ref'};

    my $type = _type($data);
    my $walk = sub { my ($sub, $value, @more) = @_; _walk($sub, $value, [@$path, @more], $root, $report) };
    for my $keyword (grep { exists $schema->{$_} } @KEYWORDS) {
        my $value = $schema->{$keyword};
        if ($keyword eq 'type') {
            my @types = ref $value eq 'ARRAY' ? @$value : ($value);
            $error->(type => 'must be of type ' . join(' or ', @types)) unless grep { _has_type($data, $_) } @types;
        }
        elsif ($keyword eq 'enum') {
            $error->(enum => 'must be one of the allowed values') unless grep { _equal($_, $data) } @$value;
        }
        elsif ($keyword eq 'const') {
            $error->(const => 'must be equal to the constant') unless _equal($value, $data);
        }
        elsif ($type eq 'number' && $keyword =~ /\A(?:multipleOf|maximum|exclusiveMaximum|minimum|exclusiveMinimum)\z/) {
            my %broken = (
                multipleOf       => sub { my $q = $data / $value; $q != int $q },
                maximum          => sub { $data > $value },
                exclusiveMaximum => sub { $data >= $value },
                minimum          => sub { $data < $value },
                exclusiveMinimum => sub { $data <= $value },
            );
            $error->($keyword => "must satisfy $keyword $value") if $broken{$keyword}->();
        }
        elsif ($type eq 'string' && $keyword eq 'maxLength') {
            $error->($keyword => "must not have more than $value characters") if _chars($data) > $value;
        }
        elsif ($type eq 'string' && $keyword eq 'minLength') {
            $error->($keyword => "must not have fewer than $value characters") if _chars($data) < $value;
        }
        elsif ($type eq 'string' && $keyword eq 'pattern') {
            $error->($keyword => "must match the pattern $value") unless $data =~ /$value/;
        }
        elsif ($type eq 'array') {
            _array_keyword($schema, $keyword, $value, $data, $walk, $error, $root);
        }
        elsif ($type eq 'object') {
            _object_keyword($schema, $keyword, $value, $data, $walk, $error, $root);
        }
        if ($keyword eq 'if') {
            my $branch = _is_valid($value, $data, $root) ? 'then' : 'else';
            $walk->($schema->{$branch}, $data) if exists $schema->{$branch};
        }
        elsif ($keyword eq 'allOf') {
            $walk->($_, $data) for @$value;
        }
        elsif ($keyword eq 'anyOf') {
            $error->(anyOf => 'must match a schema in anyOf') unless grep { _is_valid($_, $data, $root) } @$value;
        }
        elsif ($keyword eq 'oneOf') {
            my $matching = grep { _is_valid($_, $data, $root) } @$value;
            $error->(oneOf => "must match exactly one schema in oneOf (matches $matching)") if $matching != 1;
        }
        elsif ($keyword eq 'not') {
            $error->(not => 'must not be valid under the schema in not') if _is_valid($value, $data, $root);
        }
    }
    return;
}

sub _array_keyword {
    my ($schema, $keyword, $value, $data, $walk, $error, $root) = @_;
    my $items = $schema->{items};
    if ($keyword eq 'items') {
        if (ref $value eq 'ARRAY') {
            $walk->($value->[$_], $data->[$_], $_) for 0 .. _min($#$value, $#$data);
        }
        else {
            $walk->($value, $data->[$_], $_) for 0 .. $#$data;
        }
    }
    elsif ($keyword eq 'additionalItems' && ref $items eq 'ARRAY' && @$data > @$items) {
        if (blessed $value && !$value) {
            $error->($keyword => 'must not have more than ' . @$items . ' items');
        }
        else {
            $walk->($value, $data->[$_], $_) for scalar(@$items) .. $#$data;
        }
    }
    elsif ($keyword eq 'maxItems') {
        $error->($keyword => "must not have more than $value items") if @$data > $value;
    }
    elsif ($keyword eq 'minItems') {
        $error->($keyword => "must not have fewer than $value items") if @$data < $value;
    }
    elsif ($keyword eq 'uniqueItems' && $value) {
        my $duplicate = grep {
            my $i = $_;
            grep { _equal($data->[$i], $data->[$_]) } $i + 1 .. $#$data
        } 0 .. $#$data;
        $error->($keyword => 'must not have duplicate items') if $duplicate;
    }
    elsif ($keyword eq 'contains') {
        $error->($keyword => 'must contain a valid item') unless grep { _is_valid($value, $_, $root) } @$data;
    }
    return;
}

sub _object_keyword {
    my ($schema, $keyword, $value, $data, $walk, $error, $root) = @_;
    my @names = sort keys %$data;
    if ($keyword eq 'maxProperties') {
        $error->($keyword => "must not have more than $value properties") if @names > $value;
    }
    elsif ($keyword eq 'minProperties') {
        $error->($keyword => "must not have fewer than $value properties") if @names < $value;
    }
    elsif ($keyword eq 'required') {
        # At the object, not at the property that is not there.
        $error->($keyword => "must have required property '$_'") for grep { !exists $data->{$_} } @$value;
    }
    elsif ($keyword eq 'properties') {
        $walk->($value->{$_}, $data->{$_}, $_) for grep { exists $data->{$_} } sort keys %$value;
    }
    elsif ($keyword eq 'patternProperties') {
        for my $pattern (sort keys %$value) {
            $walk->($value->{$pattern}, $data->{$_}, $_) for grep {/$pattern/} @names;
        }
    }
    elsif ($keyword eq 'additionalProperties') {
        my @patterns = keys %{ $schema->{patternProperties} // {} };
        my @extras   = grep {
            my $name = $_;
            !exists(($schema->{properties} // {})->{$name}) && !grep { $name =~ /$_/ } @patterns
        } @names;
        if (blessed $value && !$value) {
            $error->($keyword => 'must not have the properties ' . join(', ', map {"'$_'"} @extras)) if @extras;
        }
        else {
            $walk->($value, $data->{$_}, $_) for @extras;
        }
    }
    elsif ($keyword eq 'dependencies') {
        for my $name (grep { exists $data->{$_} } sort keys %$value) {
            my $dependency = $value->{$name};
            if (ref $dependency eq 'ARRAY') {
                $error->($keyword => "must have property '$_' when '$name' is present")
                    for grep { !exists $data->{$_} } @$dependency;
            }
            else {
                $walk->($dependency, $data);
            }
        }
    }
    elsif ($keyword eq 'propertyNames') {
        $walk->($value, $_) for @names;
    }
    return;
}

sub _min { $_[0] < $_[1] ? $_[0] : $_[1] }

1;

__END__

=head1 NAME

Gateway::Client::Details - where a body breaks a contract, as the gateway reports it

=head1 SYNOPSIS

    use Gateway::Client::Details qw(validation_details);

    my @details = validation_details($contract->{definitions}{request}, $body, $contract);
    # ({ path => '/items/1', message => "must have required property 'n'" }, ...)

=head1 DESCRIPTION

C<validation_details($schema, $data, $root)> returns the details of the gateway's 422 for
C<$data> against C<$schema> (a draft-07 subschema of C<$root>, in which C<$ref>s resolve;
only local C<#/...> references): the same paths in the same order as the gateway, the
Python and the JavaScript clients (the messages are this module's own). The rule:

=over

=item * one detail per failing keyword, at the instance it is about: a missing property
and unexpected properties at the object (one detail for all unexpected ones); a failed
C<anyOf>, C<oneOf>, C<not> or C<contains> once, at its instance; C<allOf>, C<$ref>,
C<if>/C<then>/C<else>, C<properties>, C<items> and the like report their subschemas' errors;

=item * at most 100 errors are looked at, then sorted most relevant first: shallower paths
first, then document order (segment by segment: array indices as numbers, names by code
point), then at one place C<anyOf>/C<oneOf> last; at most 20 are returned.

=back

Which 100 errors are looked at follows the walk's order: array items by index, and a
fixed keyword order with properties by name (the gateway follows the schema's own
keyword order, which a Perl hash does not keep). So a body with more than 100 errors gets
the gateway's details when its first 100 errors are the same in both orders (e.g. many
wrong items of one array); with at most 100, always.

Data is typed as L<JSON::PP> would encode it: a scalar is a number only if it has a
numeric value and no string value.

=cut
